"""Progress for a chunked build: chunks done, rate, ETA and memory, via tqdm.

tqdm does the rate and ETA arithmetic and the terminal handling; this wrapper only decides where
the bar goes. The bar is drawn on the terminal the process started with (`sys.__stderr__`), not on
`sys.stderr`, which a runner may have redirected into a step log (a bar there would switch itself off
and fill the log with carriage returns). Every finished chunk is also one log line; while the bar is
on, that line is kept off the terminal's log handler so it does not tear the bar.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import psutil
from tqdm import tqdm

from policyengine_us_data.calibration.chunk_plan import ChunkResult

LOG = logging.getLogger(__name__)


def terminal() -> TextIO | None:
    """The process's original stderr when it is a terminal, else None."""
    stream = sys.__stderr__
    try:
        return stream if stream is not None and stream.isatty() else None
    except ValueError:  # closed
        return None


class _NotThisLogger(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != LOG.name


class ChunkProgress:
    """A progress bar over chunks that starts at the number already done (resume)."""

    def __init__(self, total: int, done: int = 0, enabled: bool = True) -> None:
        self.total = total
        self.done = done
        self.enabled = enabled
        self._bar = None
        self._muted: list[logging.Handler] = []
        self._filter = _NotThisLogger()

    def __enter__(self) -> "ChunkProgress":
        screen = terminal() if self.enabled else None
        if screen is not None:
            self._bar = tqdm(total=self.total, initial=self.done, unit="chunk", desc="chunks", file=screen,
                             dynamic_ncols=True)
            self._mute_terminal_handlers(screen)
        return self

    def _mute_terminal_handlers(self, screen: TextIO) -> None:
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is screen:
                handler.addFilter(self._filter)
                self._muted.append(handler)

    def advance(self, result: ChunkResult) -> None:
        """Count one finished chunk and show its memory and duration."""
        self.done += 1
        rss = psutil.Process().memory_info().rss / 2**20
        if self._bar is not None:
            self._bar.set_postfix(rss=f"{rss:.0f}MB", last=f"{result.seconds:.1f}s", refresh=False)
            self._bar.update(1)
        if self.enabled:
            LOG.info(
                "chunk %d done (%d/%d): %d non-zeros in %.1f s, worker peak %.0f MB",
                result.chunk_id, self.done, self.total, result.nnz, result.seconds, result.peak_rss_mb,
            )

    def __exit__(self, *exc) -> None:
        for handler in self._muted:
            handler.removeFilter(self._filter)
        self._muted.clear()
        if self._bar is not None:
            self._bar.close()
