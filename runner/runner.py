"""CommandRunner: the registry of steps and the driver of a run (plan, reset, run, checkpoint, journal).

Exit codes (``RunResult.exit_code``, ``main``'s return): 0 done; 1 a step failed; 2 usage or bad input
(unknown label, ``--reset-to`` a step without a checkpoint or with a damaged one, an unwritable run directory,
a non-empty directory the runner did not create without ``--adopt``, an input file that is not a regular file
or lies inside the run directory, a symlink in ``.runner/``, ``CommandError(..., exit_code=2)`` /
``InputError`` from a step); 3 the run directory is locked; 130 Ctrl-C (anywhere) and 143 SIGTERM during a step.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO, TypeVar

from . import cli, status
from .checkpoints import RUNNER_DIR, CheckpointError, CheckpointStore
from .command import BaseCommand
from .fsutil import UnsafeStateFile, check_state_dir, printable
from .inputs import CACHE_NAME as INPUT_CACHE
from .inputs import InputDigests
from .journal import Journal
from .lock import RunDirLock, RunDirLocked, live_holder
from .params import MEMORY_NAME, ParamMemory, apply_remembered, explicit_dests, param_changes, remembered_values
from .planning import ParamError, Plan, Step, make_plan
from .ownership import RESET, read_state_json
from .session import RunResult, Session

LABEL_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
C = TypeVar("C", bound=type)


class CommandRunner:
    """Runs registered steps in order inside ``run_dir``, checkpointing the directory after each one."""

    def __init__(self, run_dir: str | Path, name: str | None = None) -> None:
        self.run_dir = Path(run_dir).absolute()
        self.name = name
        self.out: TextIO | None = None  # where reports go; None means sys.stdout at call time
        self.on_event: Callable[[dict[str, Any]], None] | None = None  # step start/end, for progress displays
        self._steps: dict[str, Step] = {}

    # ------------------------------------------------------------------ registry
    def register(self, label: str, order: float) -> Callable[[C], C]:
        """Decorator registering a BaseCommand subclass as step ``label``; returns the class unchanged."""
        if not isinstance(label, str) or not LABEL_RE.match(label):
            raise ValueError(f"bad step label {label!r}: use a short lowercase word matching {LABEL_RE.pattern}")
        if label in self._steps:
            raise ValueError(f"step label {label!r} is already registered")
        clash = next((s.label for s in self._steps.values() if s.order == order), None)
        if clash is not None:
            raise ValueError(f"order {order!r} of step {label!r} is already used by step {clash!r}")

        def decorator(cls: C) -> C:
            if not (isinstance(cls, type) and issubclass(cls, BaseCommand)):
                raise TypeError(f"step {label!r} must be a BaseCommand subclass, not {cls!r}")
            if label in self._steps:
                raise ValueError(f"step label {label!r} is already registered")
            self._steps[label] = Step(label, float(order), cls)
            return cls

        return decorator

    @property
    def steps(self) -> list[Step]:
        """Registered steps in run order."""
        return sorted(self._steps.values(), key=lambda s: s.order)

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self.steps]

    def build_parser(self) -> argparse.ArgumentParser:
        """The command-line parser: runner flags plus each step's own group."""
        return cli.build_parser(self.name, self.steps)

    # ------------------------------------------------------------------ entry points
    def main(self, argv: Sequence[str] | None = None) -> int:
        """CLI entry: run, print any error message to stderr, return the exit code (never sys.exit)."""
        result = self.run(argv)
        if result.message:
            try:
                print(printable(result.message), file=sys.stderr if result.exit_code else self._out())
            except KeyboardInterrupt:
                return 130
        return result.exit_code

    def run(self, args: Sequence[str] | argparse.Namespace | None = None) -> RunResult:
        """Parse ``args`` (argv list, Namespace, or None for sys.argv[1:]) and do what they ask."""
        try:
            parser = self.build_parser()
            argv = sys.argv[1:] if args is None else args
            ns = cli.parse(parser, argv)
            ns.explicit_params = explicit_dests(parser, argv)
            return self._dispatch(ns)
        except cli.HelpShown:
            return RunResult(0)
        except KeyboardInterrupt:
            return RunResult(130, "interrupted (Ctrl-C)")
        except (cli.UsageError, ParamError, CheckpointError, UnsafeStateFile) as exc:
            return RunResult(2, printable(str(exc)))
        except RunDirLocked as exc:
            return RunResult(3, str(exc))
        except BrokenPipeError:  # the reader of our output left (`--status | head -1`): the caller's to handle
            raise
        except OSError as exc:  # the runner's own file work failed (disk full, permissions): no traceback
            return RunResult(1, printable(f"runner error in {self.run_dir}: {exc}"))

    # ------------------------------------------------------------------ dispatch
    def _out(self) -> TextIO:
        return self.out or sys.stdout

    def _print(self, text: str) -> None:
        print(printable(text), file=self._out(), flush=True)

    def emit(self, event: dict[str, Any]) -> None:
        """Pass a progress event (``{"event": "step", "label", "status", ...}``) to ``on_event``, if set."""
        if self.on_event is not None:
            self.on_event(event)

    def _index(self, label: str, flag: str) -> int:
        if label not in self._steps:
            known = ", ".join(self.labels) or "(none registered)"
            raise cli.UsageError(f"{flag} {label}: unknown step; steps are: {known}")
        return self.labels.index(label)

    def _dispatch(self, ns: argparse.Namespace) -> RunResult:
        if not self._steps:
            raise cli.UsageError("no steps are registered")
        if ns.list:
            self._print(cli.format_list(self.steps))
            return RunResult(0)
        target = self._index(ns.to, "--to") if ns.to else len(self._steps) - 1
        if ns.reset_to:
            self._index(ns.reset_to, "--reset-to")
        self._check_state_dirs()
        remembered = self._remember(ns)
        cli.check_input_files(self.steps, ns, self.run_dir)
        if ns.status or ns.dry_run:
            return self._report(ns, target, remembered)
        adopted = self._ensure_run_dir(ns)
        with RunDirLock(self.run_dir / RUNNER_DIR / "lock", self.run_dir):
            session = Session(self, ns)
            if adopted:
                session.journal.note("_run_dir", "adopted", f"--adopt: building in {self.run_dir}, which held files")
            return session.execute(target)

    def _remember(self, ns: argparse.Namespace) -> dict[str, dict[str, Any]]:
        """Unset output-defining flags keep each step's remembered values (see params.py); returns them."""
        if not self.run_dir.is_dir():
            return {}
        memory = ParamMemory(self.run_dir / RUNNER_DIR / MEMORY_NAME)
        remembered = remembered_values(self.steps, memory, CheckpointStore(self.run_dir))
        if getattr(ns, "forget_params", False):
            return remembered
        used = apply_remembered(ns, getattr(ns, "explicit_params", set()), remembered)
        if used and not (ns.status or ns.dry_run and ns.json):
            self._print("remembered from the last run: " + ", ".join(used) + " (pass a flag to change it)")
        return remembered

    def _report(self, ns: argparse.Namespace, target: int, remembered: dict[str, dict[str, Any]]) -> RunResult:
        """--status and --dry-run: read-only, no lock, nothing written."""
        store = CheckpointStore(self.run_dir)
        journal = Journal(self.run_dir / RUNNER_DIR / "journal.json")
        if journal.warning:
            print(f"warning: {journal.warning}", file=sys.stderr)
        inputs = InputDigests(self.run_dir / RUNNER_DIR / INPUT_CACHE)  # read here, written only under the lock
        intent = read_state_json(self.run_dir / RUNNER_DIR / RESET)
        pending = None
        if isinstance(intent, dict):
            label = intent.get("label")
            pending = self.labels.index(label) if label in self.labels else -1
            print("warning: a reset was interrupted; the next run finishes it first", file=sys.stderr)
        plan: Plan = make_plan(self.steps, ns, store, journal, target, ns.force, inputs=inputs,
                               reset_pending=pending)
        if ns.status:
            holder = live_holder(self.run_dir / RUNNER_DIR / "lock")
            changes = param_changes(ns, getattr(ns, "explicit_params", set()), remembered)
            report = status.status_report(plan.statuses, journal, self.run_dir, holder, remembered, changes)
            self._print(json.dumps(report) if ns.json else status.format_status(report))
        if ns.dry_run:
            report = status.dry_run_report(plan, ns, self.run_dir)
            self._print(json.dumps(report) if ns.json else status.format_dry_run(report))
        return RunResult(0, skipped=tuple(s.label for s in plan.skipped))

    def _check_state_dirs(self) -> None:
        """``.runner/`` and its folders must be real directories: a symlink there is refused, not followed."""
        hidden = self.run_dir / RUNNER_DIR
        for path in (hidden, hidden / "checkpoints", hidden / "logs"):
            check_state_dir(path)

    def _ensure_run_dir(self, ns: argparse.Namespace) -> bool:
        """Create the run directory and the runner's folder. A non-empty directory without ``.runner/`` is not
        the runner's: refused unless ``--adopt`` (True is returned: the session journals it); nothing is
        written before that."""
        try:
            if self.run_dir.exists() and not self.run_dir.is_dir():
                raise cli.UsageError(f"run directory {self.run_dir} exists and is not a directory: "
                                     "choose another run directory, or move the file away")
            hidden = self.run_dir / RUNNER_DIR
            foreign = self.run_dir.is_dir() and not hidden.exists() and any(self.run_dir.iterdir())
            if foreign and not getattr(ns, "adopt", False):
                raise cli.UsageError(f"run directory {self.run_dir} is not empty and the runner did not create it: "
                                     "choose a new or empty directory, or pass --adopt to build there (the files "
                                     "already in it stay yours: never removed, moved aside if in a step's way)")
            (hidden / "logs").mkdir(parents=True, exist_ok=True)
            (hidden / "checkpoints").mkdir(exist_ok=True)
            probe = hidden / f".probe-{id(self)}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise cli.UsageError(f"cannot use run directory {self.run_dir}: {exc.strerror or exc}; "
                                 "choose a run directory you can create and write to") from exc
        return foreign

    def step_seconds(self) -> dict[str, float]:
        """Each step's duration in its last successful attempt (from the journal), for a step's own report."""
        journal = Journal(self.run_dir / RUNNER_DIR / "journal.json")
        found = {}
        for label in self.labels:
            done = journal.last_done(label)
            if done and isinstance(done.get("duration_s"), (int, float)):
                found[label] = float(done["duration_s"])
        return found

    def log_path(self, label: str) -> Path:
        """The step's log file; a step may send its subprocesses' output there (Python prints go there already)."""
        return self.run_dir / RUNNER_DIR / "logs" / f"{label}.log"


__all__ = ["CommandRunner", "RunResult"]
