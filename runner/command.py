"""The step API: what a step is given (BuildState), what it implements (BaseCommand), how it fails (CommandError).

Kept deliberately small, in the shape of LSST's ci_builder: a step is a class with a label, an order and
``run(state)``; everything about history, resets and checkpoints belongs to the runner.
"""

from __future__ import annotations

import abc
import argparse
import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

from .codeid import project_files
from .protocols import RunnerView



@dataclass(frozen=True)
class BuildState:
    """What a step knows about the run directory when it starts.

    ``dirty`` is True when the directory differs from the last checkpoint (``--allow-dirty``, or a resumable
    step restarting on top of its own partial outputs); ``reason`` says why the step runs.
    """

    run_dir: Path
    completed: tuple[str, ...]
    current: str | None
    dirty: bool
    reason: str


class CommandError(Exception):
    """A step's expected failure: the CLI prints the message without a traceback.

    ``exit_code`` is 1 (the step failed) by default; raise with ``exit_code=2`` when the cause is bad input
    (a missing file the user named, an invalid parameter), so scripts can tell the two apart, and with
    ``exit_code=3`` when a resource the step needs is held by another live build (like the run-directory lock).
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        if exit_code not in (1, 2, 3):
            raise ValueError(f"CommandError exit_code must be 1, 2 or 3, not {exit_code!r}")
        self.exit_code = exit_code


class InputError(CommandError, ValueError):
    """Bad input to a step (exit 2). Also a ValueError, so validation code can raise it naturally."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=2)


class BaseCommand(abc.ABC):
    """One step of a run. Subclasses implement ``run(state)`` and may add their own command-line flags.

    Class attributes:
      resumable -- True: after a failed or interrupted attempt the step restarts on top of its own partial
                   outputs (``state.dirty`` is True) instead of from a reset directory.
      params    -- argparse dests that define the step's output; changing one makes the step stale.
      outputs   -- paths (files or folders, relative to the run directory) the step writes. A file there that
                   the runner did not write is moved aside before the step runs; only changes under them are
                   taken as the step's. Empty: every file the step creates or changes is its output.
    Override ``input_files(args)`` to name files read from outside the run directory (their content joins the
    fingerprint), ``precheck(args)`` and ``validate(args)`` to refuse bad input before the runner touches the run
    directory, and ``describe(args, run_dir)`` to add an estimate to ``--dry-run``.
    """

    resumable: ClassVar[bool] = False
    params: ClassVar[tuple[str, ...]] = ()
    outputs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, args: argparse.Namespace, runner: RunnerView) -> None:
        self.args = args
        self.runner = runner

    @abc.abstractmethod
    def run(self, state: BuildState) -> None:
        """Do the step's work inside ``state.run_dir``. Write new files via temp + ``os.replace``."""

    @classmethod
    def add_arguments(cls, parser: argparse._ArgumentGroup | argparse.ArgumentParser) -> None:
        """Add the step's own flags. Called once per class, even when registered under two labels."""

    @classmethod
    def precheck(cls, args: argparse.Namespace) -> None:
        """The checks that need nothing slow (no heavy import, no simulation); raise InputError when bad.

        The runner calls every step's ``precheck`` before any step's ``validate``, so a missing file named for
        a late step is reported in seconds, not after an earlier step's slow validation. Default: nothing.
        """

    @classmethod
    def validate(cls, args: argparse.Namespace) -> None:
        """Check the flags and input files this step will use; raise InputError (exit 2) when they are bad.

        The runner calls it for every step about to run before it resets the directory, drops a checkpoint or
        journals an attempt, so bad input changes nothing in the run directory. Default: nothing to check.
        """

    @classmethod
    def input_files(cls, args: argparse.Namespace) -> Sequence[str | Path]:
        """Files outside the run directory whose content defines the step's output (a dataset, a database).

        Editing one in place makes the step stale ("input file changed: PATH"); copying or touching it does
        not. Default: none.
        """
        return ()

    @classmethod
    def describe(cls, args: argparse.Namespace, run_dir: Path) -> dict[str, Any] | None:
        """What ``--dry-run`` says about this step beyond its reason: a JSON-able dict (its ``"summary"`` string
        is printed; the rest joins ``--dry-run --json``), or None. Must be cheap and read-only. Default: None."""
        return None

    @classmethod
    def code_identity(cls) -> dict[str, str] | str:
        """The code behind this step; a change makes the step stale ("code changed: pkg/module.py").

        Default: ``{file: hash}`` of the module defining the class and every project module it imports,
        transitively (see codeid.py). Override to narrow or widen what counts as the step's code.
        """
        files = project_files(cls.__module__)
        return files if files else code_identity_of(cls)


def code_identity_of(obj: Any) -> str:
    """Hash the source file of ``obj``'s module; fall back to its own source, then to its qualified name."""
    try:
        source_file = inspect.getsourcefile(obj)
        if source_file:
            return "sha256:" + hashlib.sha256(Path(source_file).read_bytes()).hexdigest()[:16]
    except (TypeError, OSError):
        pass
    try:
        text = inspect.getsource(obj)
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]
    except (TypeError, OSError):
        return f"name:{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
