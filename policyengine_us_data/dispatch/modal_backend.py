"""Fan chunks out over Modal containers from inside the coordinator's container.

The coordinator (the runner's dispatch step inside the app's `build_matrix` function, with the staging
volume mounted) takes the run id's lease, publishes the plans, spawns one `build_matrix_chunk_worker`
call per contiguous batch of chunk ids, and waits for each call with a timeout derived from the chunk
time, so one failing or hung batch never stops the others. A batch that crashes or times out is
cancelled; the chunks it committed are kept and the rest are resubmitted in smaller batches, a bounded
number of times. Workers commit the volume after every chunk; the coordinator reloads it before it
trusts a shard. A shard that is present and verifies is never rebuilt: resuming with the same run id
picks up where the last attempt stopped. Every call carries the coordinator's code identity; a worker
of another deploy refuses to run (no retry: redeploy).
"""

from __future__ import annotations

import contextlib
import math
import secrets
import shutil
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable, Sequence

from policyengine_us_data.dispatch.base import (
    DEFAULT_MAX_RETRIES,
    ChunkDispatcher,
    DispatchReport,
    ResultCallback,
    RetryBook,
    check_unique,
    shard_verifies,
    traceback_excerpt,
    validate_run_id,
)
from policyengine_us_data.dispatch.worker import (
    DEFAULT_STAGING_ROOT,
    STATE_DIRNAME,
    chunk_dir,
    run_dir,
    volume_plans,
    write_plans,
)
from policyengine_us_data.dispatch.lease import (
    DEFAULT_HEARTBEAT_S,
    DEFAULT_STALE_AFTER_S,
    RunLease,
    VolumeSync,
)
from policyengine_us_data.shards.chunk_plan import ChunkPlan, ChunkResult
from policyengine_us_data.errors import InputError
from policyengine_us_data.dispatch.modal_names import (
    APP_FILE,
    APP_NAME,
    STAGING_VOLUME_NAME,
    WORKER_FUNCTION,
)
from policyengine_us_data.utils.atomic import atomic_path
from policyengine_us_data.utils.code_identity import code_identity

MAX_CONCURRENT_GETS = 64
# Declared cost of one production chunk before any is measured: 25,000 columns took 323 s (bench_kernel);
# real enhanced-CPS households are larger. Start-up covers queueing, cold start, import and first simulation.
DEFAULT_CHUNK_SECONDS = 600.0
DEFAULT_STARTUP_SECONDS = 900.0
DEFAULT_TIMEOUT_FACTOR = 3.0
SETUP_HINT = (
    "Run `modal token new` to log in, `modal deploy {app}` to deploy the app, "
    "or build on this machine instead with the local backend (`--backend local` / `--no-parallel`)."
).format(app=APP_FILE)


def new_run_id() -> str:
    """A fresh, valid run id: UTC time plus a short random suffix."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def contiguous_batches(chunk_ids: Sequence[int], per_batch: int) -> list[list[int]]:
    """Sorted chunk ids cut into runs of `per_batch` (the last may be shorter)."""
    if per_batch < 1:
        raise InputError(f"chunks per worker must be >= 1, got {per_batch}")
    ordered = sorted(int(c) for c in chunk_ids)
    return [ordered[i : i + per_batch] for i in range(0, len(ordered), per_batch)]


def lookup_worker(app_name: str = APP_NAME, function_name: str = WORKER_FUNCTION) -> Any:
    """The deployed worker function, or one InputError saying how to set Modal up."""
    import modal
    from modal.exception import AuthError, NotFoundError

    try:
        function = modal.Function.from_name(app_name, function_name)
        function.hydrate()
    except AuthError as exc:
        raise InputError(f"no usable Modal credentials ({exc}). {SETUP_HINT}") from exc
    except NotFoundError as exc:
        raise InputError(f"Modal function {app_name}/{function_name} is not deployed ({exc}). {SETUP_HINT}") from exc
    except modal.exception.Error as exc:
        raise InputError(f"cannot reach Modal function {app_name}/{function_name} ({exc}). {SETUP_HINT}") from exc
    return function


def lookup_volume() -> Any:
    """The existing staging volume (never created here)."""
    import modal

    return modal.Volume.from_name(STAGING_VOLUME_NAME, create_if_missing=False)


class ModalChunkDispatcher(ChunkDispatcher):
    """One `.spawn()` per contiguous batch of chunk ids, `.get()` of all, errors gathered.

    `function` and `volume` are injectable handles (tests pass fakes); when `function` is None the
    deployed worker and the staging volume are looked up. Shards land at
    `{volume_root}/{run_id}/matrix_chunks/chunk_XXXXXX.npz` whatever the plans' own shard paths say;
    the results and `plans_on_volume` name those paths.
    """

    def __init__(
        self,
        num_workers: int = 50,
        chunks_per_worker: int | None = None,
        run_id: str | None = None,  # None or "": a fresh id (resume needs the same id again)
        volume_root: str = DEFAULT_STAGING_ROOT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        function: Any = None,
        volume: Any = None,
        resume: bool = True,
        verify: Callable[..., bool] = shard_verifies,
        chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
        startup_seconds: float = DEFAULT_STARTUP_SECONDS,
        timeout_factor: float = DEFAULT_TIMEOUT_FACTOR,
        lease_stale_after: float = DEFAULT_STALE_AFTER_S,
        lease_heartbeat: float = DEFAULT_HEARTBEAT_S,
        code: str | None = None,
    ) -> None:
        if not isinstance(num_workers, int) or num_workers < 1:
            raise InputError(f"--num-matrix-workers must be a positive integer, got {num_workers!r}")
        if chunks_per_worker is not None and chunks_per_worker < 1:
            raise InputError(f"chunks per worker must be >= 1, got {chunks_per_worker}")
        if max_retries < 0:
            raise InputError(f"max_retries must be >= 0, got {max_retries}")
        if min(chunk_seconds, timeout_factor) <= 0 or startup_seconds < 0:
            raise InputError("chunk seconds and the timeout factor must be > 0, start-up seconds >= 0")
        self.run_id = validate_run_id(run_id) if run_id else new_run_id()
        self.num_workers = num_workers
        self.chunks_per_worker = chunks_per_worker
        self.volume_root = Path(volume_root)
        self.max_retries = max_retries
        self.function = function
        self.volume = volume
        self.resume = resume
        self.verify = verify
        self.plans_on_volume: list[ChunkPlan] = []
        self.chunk_seconds = float(chunk_seconds)
        self.startup_seconds = float(startup_seconds)
        self.timeout_factor = float(timeout_factor)
        self.slowest_chunk = 0.0
        self.lease_stale_after = lease_stale_after
        self.lease_heartbeat = lease_heartbeat
        self.code = code or code_identity()  # workers refuse to run under another code identity

    def shard_dir(self, local: Path) -> Path:
        """The run's chunk directory on the staging volume, wherever the caller keeps its own chunks."""
        return chunk_dir(self.volume_root, self.run_id)

    def batches(self, chunk_ids: Sequence[int]) -> list[list[int]]:
        """Contiguous batches: `chunks_per_worker` each, or ceil(n / num_workers) when unset."""
        if not chunk_ids:
            return []
        per = self.chunks_per_worker or math.ceil(len(chunk_ids) / self.num_workers)
        return contiguous_batches(chunk_ids, per)

    def batch_timeout(self, n_chunks: int) -> float:
        """How long to wait for a batch: container start-up plus `timeout_factor` x the slowest chunk seen
        (or declared) per chunk. Past it the call is cancelled and its unfinished chunks resubmitted."""
        per_chunk = max(self.chunk_seconds, self.slowest_chunk)
        return self.startup_seconds + self.timeout_factor * per_chunk * n_chunks

    def dispatch(
        self,
        plans: Sequence[ChunkPlan],
        state_dir: str,
        on_result: ResultCallback | None = None,
    ) -> DispatchReport:
        """Take the run id's lease, publish plans and state, skip verified shards, fan out, retry failures."""
        check_unique(plans)
        started = time.perf_counter()
        report = DispatchReport()
        book = RetryBook(report, self.max_retries, self._measured(on_result))
        function, volume = self._handles()
        sync = VolumeSync(volume)
        lease = RunLease(run_dir(self.volume_root, self.run_id), self.run_id, sync,
                         stale_after=self.lease_stale_after, heartbeat=self.lease_heartbeat)
        lease.acquire()
        try:
            self.plans_on_volume = volume_plans(plans, self.volume_root, self.run_id)
            by_id = {plan.chunk_id: plan for plan in self.plans_on_volume}
            self._stage_state(state_dir)
            write_plans(self.plans_on_volume, self.volume_root, self.run_id)
            todo = sorted(by_id)
            if self.resume:
                report.skipped = [c for c in todo if self.verify(by_id[c], deep=True)]
                finished = set(report.skipped)
                todo = [c for c in todo if c not in finished]
            sync.commit()
            while todo:
                todo = self._round(function, sync, todo, by_id, book)
        finally:
            lease.release()
        return report.finish(started)

    def _measured(self, on_result: ResultCallback | None) -> ResultCallback:
        """Track the slowest chunk so later batch timeouts follow measured, not only declared, chunk time."""
        def record(result: ChunkResult) -> None:
            self.slowest_chunk = max(self.slowest_chunk, float(result.seconds))
            if on_result is not None:
                on_result(result)
        return record

    def _handles(self) -> tuple[Any, Any]:
        if self.function is not None:
            return self.function, self.volume
        return lookup_worker(), self.volume if self.volume is not None else lookup_volume()

    def _stage_state(self, state_dir: str) -> None:
        """Put the build state where workers read it, unless the coordinator wrote it there already."""
        target = run_dir(self.volume_root, self.run_id) / STATE_DIRNAME
        source = Path(state_dir)
        if not source.is_dir():
            raise InputError(f"no build state directory at {source}: run the `constraints` step first")
        if source.resolve() == target.resolve():
            return
        # build_state.json last: its presence means the state is complete
        for path in sorted(source.rglob("*"), key=lambda p: (p.name == "build_state.json", str(p))):
            if path.is_file():
                dest = target / path.relative_to(source)
                with atomic_path(dest) as tmp:
                    shutil.copyfile(path, tmp)

    def _round(
        self, function: Any, sync: VolumeSync, todo: list[int], by_id: dict[int, ChunkPlan], book: RetryBook
    ) -> list[int]:
        """Spawn one call per batch, wait for each with its timeout; return the chunks to try again."""
        retry: list[int] = []
        calls: list[tuple[list[int], Any]] = []
        for batch in self.batches(todo):
            for chunk_id in batch:
                book.start(chunk_id)
            try:
                calls.append((batch, function.spawn(run_id=self.run_id, chunk_ids=batch, code_identity=self.code)))
            except Exception as exc:  # noqa: BLE001 - a batch that cannot start fails its chunks only
                retry += [c for c in batch if book.fail(c, f"spawn failed: {type(exc).__name__}: {exc}")]
        if not calls:
            return retry
        try:
            with ThreadPoolExecutor(max_workers=min(len(calls), MAX_CONCURRENT_GETS)) as pool:
                futures = {pool.submit(call.get, timeout=self.batch_timeout(len(batch))): (batch, call)
                           for batch, call in calls}
                for future in as_completed(futures):
                    batch, call = futures[future]
                    retry += self._collect(future, batch, call, sync, by_id, book)
        except BaseException:
            for _, call in calls:
                with contextlib.suppress(Exception):
                    call.cancel(terminate_containers=True)
            raise
        return retry

    def _collect(
        self, future: Any, batch: list[int], call: Any, sync: VolumeSync, by_id: dict[int, ChunkPlan],
        book: RetryBook,
    ) -> list[int]:
        """Book one batch's outcomes; a shard must verify after reload to count as done."""
        try:
            outcomes = list(future.result())
        except Exception as exc:  # noqa: BLE001 - the whole batch failed or timed out
            return self._salvage(batch, call, exc, sync, by_id, book)
        sync.reload()
        retry: list[int] = []
        seen: set[int] = set()
        for outcome in outcomes:
            chunk_id = int(outcome.get("chunk_id", -1))
            if chunk_id not in batch or chunk_id in seen:
                continue
            seen.add(chunk_id)
            if outcome.get("ok") and not self.verify(by_id[chunk_id], deep=False):
                outcome = {**outcome, "ok": False, "error": "worker reported the chunk done but its shard is "
                           "missing or damaged after a volume reload (was the volume committed?)", "traceback": ""}
            if book.record(outcome):
                retry.append(chunk_id)
        for chunk_id in batch:
            if chunk_id not in seen and book.fail(chunk_id, "worker returned no outcome for this chunk"):
                retry.append(chunk_id)
        return retry

    def _salvage(
        self, batch: list[int], call: Any, exc: Exception, sync: VolumeSync, by_id: dict[int, ChunkPlan],
        book: RetryBook,
    ) -> list[int]:
        """A batch that crashed or timed out: cancel it, keep the chunks it committed, retry the rest."""
        if is_timeout(exc):
            with contextlib.suppress(Exception):
                call.cancel(terminate_containers=True)
            error = (f"batch {batch[0]}..{batch[-1]} gave no result within {self.batch_timeout(len(batch)):.0f} s "
                     f"(start-up {self.startup_seconds:.0f} s + {self.timeout_factor:g} x "
                     f"{max(self.chunk_seconds, self.slowest_chunk):.0f} s per chunk); cancelled")
        else:
            error = f"worker call failed: {type(exc).__name__}: {exc}"
        sync.reload()
        retry: list[int] = []
        for chunk_id in batch:
            if self.verify(by_id[chunk_id], deep=True):
                book.record({"chunk_id": chunk_id, "ok": True, "reused": True})
            elif book.fail(chunk_id, error, traceback_excerpt(exc)):
                retry.append(chunk_id)
        return retry


def is_timeout(exc: BaseException) -> bool:
    """`FunctionCall.get(timeout=...)` raises modal.exception.TimeoutError when the time is up."""
    if isinstance(exc, TimeoutError):
        return True
    try:
        from modal.exception import TimeoutError as ModalTimeout
    except ImportError:  # pragma: no cover - modal is a dependency
        return False
    return isinstance(exc, ModalTimeout)


__all__ = ["ModalChunkDispatcher", "contiguous_batches", "lookup_worker", "new_run_id", "shard_verifies"]
