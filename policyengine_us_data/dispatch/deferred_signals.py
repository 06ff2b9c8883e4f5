"""Hold Ctrl-C and SIGTERM while the process pool is being driven; act on them at a point we choose.

A signal handler that raises (Python's KeyboardInterrupt, a runner's SIGTERM handler) can fire inside
concurrent.futures' own bookkeeping, between a lock's acquire and its release. The pool's manager thread then
waits on that lock forever and the interrupted dispatch hangs instead of stopping. So while the pool runs,
the handlers only record the signal; the dispatch loop calls `deliver()` between waits, where no lock is held,
and the handler that was replaced runs there, or at the block's end for a signal that came during the last wait.
"""

from __future__ import annotations

import signal
import threading
from types import TracebackType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class DeferredSignals:
    """Context manager: record SIGINT/SIGTERM inside, run the replaced handler at `deliver()`.

    Outside the main thread (where handlers cannot be set) it does nothing and signals act as usual.
    """

    def __init__(self) -> None:
        self.pending: list[int] = []
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "DeferredSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._record)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Restore the handlers; a signal still held when the block ends normally is acted on here (a Ctrl-C
        during the last chunk's wait must stop the build, not vanish)."""
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if kind is None and self.pending:
            _act(self.pending.pop(0), previous)

    def _record(self, signum: int, frame: object) -> None:
        self.pending.append(signum)

    def deliver(self) -> None:
        """Act on the first recorded signal as the replaced handler would have: usually by raising."""
        if self.pending:
            _act(self.pending.pop(0), self._previous)


def _act(signum: int, handlers: dict[int, Any]) -> None:
    handler = handlers.get(signum, signal.SIG_DFL)
    if callable(handler):
        handler(signum, None)  # KeyboardInterrupt for Python's default Ctrl-C; the runner's Terminated
    elif handler == signal.SIG_DFL:
        # the default action ends the process; end it through the dispatcher's cleanup instead
        raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)
