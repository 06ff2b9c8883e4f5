"""An emulated Modal for tests: a volume, a function and its calls, with Modal's semantics, on local disk.

- `EmulatedVolume`: the committed volume is `{root}/volume`. Each container works on its own copy,
  `{root}/containers/<name>`, made at container start; `reload()` brings in what others committed (keeping
  this container's uncommitted edits), `commit()` publishes this container's edits. Others see a write only
  after it is committed; a container that dies loses what it did not commit (its copy is simply dropped).
- `EmulatedFunction.spawn(**kwargs)` starts a container *process* (forkserver, so it starts in ~50 ms) that runs
  the real `build_matrix_chunk_worker` body against its copy. A container killed (SIGKILL, like an OOM kill) is
  retried in a fresh container up to the function's `retries`; a preempted one (exit code `PREEMPTED`) is
  restarted without using a retry. `FunctionCall.get(timeout=)` raises `modal.exception.TimeoutError` when the
  time is up; `cancel()` kills the container and retries nothing.
- Faults are injected per chunk and attempt (`Fault`); every kernel call is logged to `{root}/kernel_calls.log`
  (one line per call, `chunk_id pid`), so tests can count what was (re)computed.

`python -m tests.support.emulated_modal coordinator SPEC.json OUT.json` runs the app's coordinator (`build_matrix`) in
its own process group, so a test can SIGKILL the coordinator with everything it started.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PREEMPTED = 75  # the exit code an emulated preemption uses
PRELOAD = ["policyengine_us_data.modal_app.app", "tests.support.emulated_modal", "tests.support.toy_simulator",
           "policyengine_us_data.kernel.chunk_kernel"]


@dataclass(frozen=True)
class Fault:
    """What happens to `chunk` on its `attempt`-th kernel call: 'oom' (SIGKILL), 'preempt', 'hang' or 'slow'."""

    chunk: int
    kind: str
    attempt: int = 1
    seconds: float = 0.0


class EmulatedVolume:
    """One container's view of the volume at `view` over the committed store at `store`."""

    def __init__(self, store: Path, view: Path) -> None:
        self.store, self.view = Path(store), Path(view)
        self.baseline: dict[str, tuple[int, int]] = {}

    @staticmethod
    def _files(root: Path) -> dict[str, tuple[int, int]]:
        out = {}
        for path in root.rglob("*"):
            if path.is_file():
                st = path.stat()
                out[path.relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns)
        return out

    @contextlib.contextmanager
    def _locked(self):
        with open(self.store.parent / "volume.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    @staticmethod
    def _copy(src: Path, dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.parent / f".emu-{os.getpid()}-{dst.name}"
        shutil.copy2(src, tmp)
        os.replace(tmp, dst)

    def reload(self) -> None:
        """Bring in committed changes; files this container changed and did not commit stay as they are."""
        with self._locked():
            mine = self._files(self.view)
            committed = self._files(self.store)
            for rel, stamp in committed.items():
                if mine.get(rel) == self.baseline.get(rel) and self.baseline.get(rel) != stamp:
                    self._copy(self.store / rel, self.view / rel)
            for rel in set(self.baseline) - set(committed):
                if mine.get(rel) == self.baseline[rel]:
                    (self.view / rel).unlink(missing_ok=True)
            self.baseline = self._files(self.view)
            self.baseline = {rel: s for rel, s in self.baseline.items() if rel in committed}

    def commit(self) -> None:
        """Publish this container's changes (new, modified and deleted files), then reload like Modal does."""
        with self._locked():
            mine = self._files(self.view)
            for rel, stamp in mine.items():
                if self.baseline.get(rel) != stamp:
                    self._copy(self.view / rel, self.store / rel)
            for rel in set(self.baseline) - set(mine):
                (self.store / rel).unlink(missing_ok=True)
            self.baseline = dict(mine)
        self.reload()


class EmulatedModal:
    """One emulated account: a committed volume, its containers, the kernel-call log."""

    def __init__(self, root: Path, retries: int | None = None) -> None:
        """`retries`: how often a crashed input is rerun; by default the worker function's own setting."""
        from policyengine_us_data.modal_app.app import WORKER_RETRIES

        self.root = Path(root)
        self.store = self.root / "volume"
        self.store.mkdir(parents=True, exist_ok=True)
        (self.root / "containers").mkdir(exist_ok=True)
        self.retries = WORKER_RETRIES if retries is None else retries

    @property
    def kernel_log(self) -> Path:
        return self.root / "kernel_calls.log"

    def kernel_calls(self) -> dict[int, int]:
        """How often the kernel started on each chunk, across every container so far."""
        counts: dict[int, int] = {}
        if self.kernel_log.exists():
            for line in self.kernel_log.read_text().splitlines():
                chunk = int(line.split()[0])
                counts[chunk] = counts.get(chunk, 0) + 1
        return counts

    def container(self, prefix: str) -> EmulatedVolume:
        """A fresh container: its own copy of the committed volume, as of now."""
        view = self.root / "containers" / f"{prefix}-{os.getpid()}-{time.monotonic_ns()}"
        volume = EmulatedVolume(self.store, view)
        with volume._locked():
            shutil.copytree(self.store, view, copy_function=shutil.copy2)
            volume.baseline = volume._files(view)
        return volume

    def function(self, faults: list[Fault] = (), deployed_code: str | None = None) -> "EmulatedFunction":
        return EmulatedFunction(self, list(faults), deployed_code)


@dataclass
class EmulatedFunction:
    """`modal.Function.from_name(app, "build_matrix_chunk_worker")` of one emulated deploy."""

    modal: EmulatedModal
    faults: list[Fault] = field(default_factory=list)
    deployed_code: str | None = None  # a stale deploy: the workers' code identity
    calls: list["EmulatedCall"] = field(default_factory=list)

    def spawn(self, **kwargs: Any) -> "EmulatedCall":
        call = EmulatedCall(self, kwargs)
        self.calls.append(call)
        return call

    def remote(self, **kwargs: Any) -> Any:
        return self.spawn(**kwargs).get()


class EmulatedCall:
    """`modal.FunctionCall`: attempts run in container processes supervised by a thread."""

    def __init__(self, function: EmulatedFunction, kwargs: dict[str, Any]) -> None:
        self.function, self.kwargs = function, kwargs
        self.attempts: list[int] = []  # exit codes
        self.done = threading.Event()
        self.cancelled = False
        self.process: multiprocessing.process.BaseProcess | None = None
        self.outcome: Any = None
        self.error: BaseException | None = None
        threading.Thread(target=self._supervise, daemon=True).start()

    def _supervise(self) -> None:
        import modal

        emu, retries = self.function.modal, self.function.modal.retries
        while not self.cancelled:
            volume = emu.container("worker")
            result = volume.view.parent / f"{volume.view.name}.result.json"
            spec = {"store": str(emu.store), "view": str(volume.view), "result": str(result),
                    "kernel_log": str(emu.kernel_log), "faults": [asdict(f) for f in self.function.faults],
                    "deployed_code": self.function.deployed_code, "kwargs": self.kwargs}
            self.process = _context().Process(target=container_main, args=(spec,))
            self.process.start()
            self.process.join()
            code = self.process.exitcode
            self.attempts.append(code)
            shutil.rmtree(volume.view, ignore_errors=True)  # the container is gone, with what it did not commit
            if code == 0 and result.exists():
                self.outcome = json.loads(result.read_text())
                break
            crashes = sum(1 for c in self.attempts if c != PREEMPTED)
            if code != PREEMPTED and crashes > retries:
                self.error = modal.exception.RemoteError(
                    f"container for {self.kwargs.get('chunk_ids')} exited with {code} on all {crashes} attempts")
                break
        self.done.set()

    def get(self, timeout: float | None = None) -> Any:
        import modal

        if not self.done.wait(timeout):
            raise modal.exception.TimeoutError(f"no output within {timeout} s")
        if self.error is not None:
            raise self.error
        return self.outcome

    def cancel(self, terminate_containers: bool = False) -> None:
        self.cancelled = True
        if self.process is not None and self.process.exitcode is None:
            with contextlib.suppress(Exception):
                self.process.kill()


def _context():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _faulty_kernel(real, spec: dict[str, Any]):
    """The real kernel, logging each call and injecting the spec's faults first."""

    def kernel(plan, state_dir):
        log = Path(spec["kernel_log"])
        with open(log, "a") as handle:
            handle.write(f"{plan.chunk_id} {os.getpid()}\n")
        attempt = sum(1 for line in log.read_text().splitlines() if int(line.split()[0]) == plan.chunk_id)
        for fault in spec["faults"]:
            if fault["chunk"] == plan.chunk_id and fault["attempt"] == attempt:
                if fault["kind"] == "oom":
                    os.kill(os.getpid(), signal.SIGKILL)
                if fault["kind"] == "preempt":
                    os._exit(PREEMPTED)
                time.sleep(fault["seconds"] if fault["kind"] == "slow" else 3600)
        return real(plan, state_dir)

    return kernel


def container_main(spec: dict[str, Any]) -> None:
    """Inside an emulated container: the real worker function body, on this container's copy of the volume."""
    from policyengine_us_data.dispatch import worker
    from policyengine_us_data.modal_app import app as app_module

    os.environ["PE_STAGING_ROOT"] = spec["view"]
    volume = EmulatedVolume(Path(spec["store"]), Path(spec["view"]))
    volume.baseline = volume._files(volume.view)
    app_module.staging_volume = volume
    app_module.in_modal_container = lambda: True
    real = worker.default_kernel()
    worker.default_kernel = lambda: _faulty_kernel(real, spec)
    if spec["deployed_code"]:
        worker.code_identity = lambda: spec["deployed_code"]
    outcome = app_module.build_matrix_chunk_worker.local(**spec["kwargs"])
    Path(spec["result"]).write_text(json.dumps(outcome))
    sys.stdout.flush()
    os._exit(0)


def install(emu: EmulatedModal, volume: EmulatedVolume, function: EmulatedFunction) -> None:
    """Point this process's Modal lookups and the app's volume at the emulation (a coordinator process)."""
    from commands import dispatch_chunks
    from policyengine_us_data.dispatch import modal_backend
    from policyengine_us_data.modal_app import app as app_module

    os.environ["PE_STAGING_ROOT"] = str(volume.view)
    modal_backend.lookup_worker = dispatch_chunks.lookup_worker = lambda *a, **k: function
    modal_backend.lookup_volume = lambda *a, **k: volume
    app_module.staging_volume = volume
    app_module.in_modal_container = lambda: True


def coordinator_spec(emu: EmulatedModal, run_id: str, runner_args: list[str], faults: list[Fault] = (),
                     deployed_code: str | None = None, **inputs: Any) -> dict[str, Any]:
    return {"root": str(emu.root), "retries": emu.retries, "run_id": run_id, "runner_args": list(runner_args),
            "faults": [asdict(f) for f in faults], "deployed_code": deployed_code, "inputs": inputs}


def run_coordinator(spec: dict[str, Any]) -> dict[str, Any]:
    """The app's coordinator (`build_matrix`) in a fresh coordinator container; its runner is a forked child
    (production starts `python -m commands.cli`; forking after the imports saves seconds per scenario)."""
    from commands import cli  # noqa: F401 - imported before the fork
    from policyengine_us_data.modal_app import app as app_module

    emu = EmulatedModal(Path(spec["root"]), retries=spec["retries"])
    volume = emu.container("coordinator")
    install(emu, volume, emu.function([Fault(**f) for f in spec["faults"]], spec["deployed_code"]))
    os.environ["PE_RUN_SCRATCH"] = str(volume.view) + ".local-disk"

    def run_runner(command, env):
        argv = list(command)[len(app_module.RUNNER_COMMAND):]
        log = Path(str(volume.view) + ".runner.log")
        pid = os.fork()
        if pid == 0:
            os.environ.update(env)
            os.dup2(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
            code = 1
            try:
                code = _runner_main(spec, str(volume.view), argv)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        lines = log.read_text().splitlines(keepends=True) if log.exists() else []
        sys.stderr.writelines(lines)
        return os.waitstatus_to_exitcode(status), "".join(lines[-40:])

    app_module.run_runner = run_runner
    return app_module.build_matrix.local(spec["run_id"], spec["runner_args"], **spec["inputs"])


def _runner_main(spec: dict[str, Any], view: str, argv: list[str]) -> int:
    """The runner subprocess of a coordinator: same container (same volume copy), emulated lookups."""
    from commands.cli import main

    emu = EmulatedModal(Path(spec["root"]), retries=spec["retries"])
    volume = EmulatedVolume(emu.store, Path(view))
    committed = EmulatedVolume._files(emu.store)
    volume.baseline = {rel: stamp for rel, stamp in volume._files(volume.view).items() if committed.get(rel) == stamp}
    install(emu, volume, emu.function([Fault(**f) for f in spec["faults"]], spec["deployed_code"]))
    from policyengine_us_data.outputs import report_figure
    from tests.reliability.conftest import _stub_figure

    report_figure.render_figure = _stub_figure  # matplotlib costs seconds a build; the figure is not under test
    return main(argv)


if __name__ == "__main__":
    if sys.argv[1] == "coordinator":
        os.setpgrp()
        out = run_coordinator(json.loads(Path(sys.argv[2]).read_text()))
        Path(sys.argv[3]).write_text(json.dumps(out))
