"""Running one step: its log file, SIGTERM and Ctrl-C handling, peak RSS, and a plain outcome record.

Nothing here raises for a step's failure: every way a step can end becomes an ``Outcome`` the runner journals.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, TextIO

from .command import BaseCommand, BuildState, CommandError
from .fsutil import open_nofollow

EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report it
EXIT_TERMINATED = 143  # SIGTERM


class Terminated(BaseException):
    """Raised in the main thread when SIGTERM arrives during a step (BaseException, like KeyboardInterrupt)."""


@dataclass(frozen=True)
class Outcome:
    """How a step attempt ended: status done/failed/interrupted, the exit code it implies, a one-line error."""

    status: str
    exit_code: int
    error: str | None = None
    peak_rss_bytes: int | None = None


def peak_rss_bytes() -> int | None:
    """High-water RSS of this process or its largest child so far (a process-wide peak, not per step)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    scale = 1 if sys.platform == "darwin" else 1024
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) * scale


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into ``Terminated`` while a step runs; only in the main thread, restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _handler(signum: int, frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Tee(io.TextIOBase):
    """Write to the terminal and to the step's log file."""

    def __init__(self, first: TextIO, second: TextIO) -> None:
        self._streams = (first, second)

    def write(self, text: str) -> int:
        for stream in self._streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self._streams:
            stream.flush()


@contextlib.contextmanager
def step_log(path: Path, label: str, reason: str) -> Iterator[TextIO]:
    """Append the step's stdout, stderr and log records to ``path`` (also shown on the terminal)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)  # a symlinked log is refused, not followed
    with os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"\n===== {stamp} {label}: start ({reason}) =====\n")
        log.flush()
        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            with contextlib.redirect_stdout(_Tee(sys.stdout, log)), contextlib.redirect_stderr(_Tee(sys.stderr, log)):
                yield log
        finally:
            root.removeHandler(handler)
            log.write(f"===== {time.strftime('%Y-%m-%d %H:%M:%S')} {label}: end =====\n")


def run_step(make: Callable[[], BaseCommand], state: BuildState, log_path: Path, label: str) -> Outcome:
    """Build the command with ``make`` and run it; a CommandError yields only its message, other errors also
    put a traceback in the step's log."""
    try:
        with step_log(log_path, label, state.reason) as log, sigterm_raises():
            try:
                make().run(state)
            except CommandError as exc:
                log.write(f"CommandError: {exc}\n")
                return Outcome("failed", exc.exit_code, str(exc), peak_rss_bytes())
            except Exception as exc:  # noqa: BLE001 - any step bug becomes a failed attempt
                traceback.print_exc(limit=-8, file=log)
                return Outcome("failed", 1, f"{exc.__class__.__name__}: {exc}", peak_rss_bytes())
            except SystemExit as exc:  # a step must not end the runner's process
                log.write(f"the step called sys.exit({exc.code!r})\n")
                return Outcome("failed", 1, f"the step called sys.exit({exc.code!r})", peak_rss_bytes())
            except KeyboardInterrupt:
                log.write("interrupted (Ctrl-C)\n")
                raise
            except Terminated:
                log.write("interrupted (SIGTERM)\n")
                raise
    except KeyboardInterrupt:
        return Outcome("interrupted", EXIT_INTERRUPTED, "interrupted (Ctrl-C)", peak_rss_bytes())
    except Terminated:
        return Outcome("interrupted", EXIT_TERMINATED, "interrupted (SIGTERM)", peak_rss_bytes())
    return Outcome("done", 0, None, peak_rss_bytes())
