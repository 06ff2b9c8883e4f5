"""Progress for a chunked build: chunks done, rate, ETA and memory, via tqdm.

tqdm does the rate and ETA arithmetic and the terminal handling; this wrapper only decides where
the bar goes. The bar is drawn on the terminal the process started with (`sys.__stderr__`), not on
`sys.stderr`, which a runner may have redirected into a step log (a bar there would switch itself off
and fill the log with carriage returns). Every finished chunk is also one log line; while the bar is
on, that line is kept off the terminal's log handler so it does not tear the bar. Every finished chunk is
also a progress event (utils/progress_events.py) with columns, elapsed time and ETA; the clock restarts
when the warm-up ends, so the warm-up does not inflate the rate.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

import psutil
from tqdm import tqdm

from policyengine_us_data.shards.chunk_plan import ChunkResult
from policyengine_us_data.utils import progress_events

LOG = logging.getLogger(__name__)


def terminal() -> TextIO | None:
    """The process's original stderr when it is a terminal, else None."""
    stream = sys.__stderr__
    try:
        return stream if stream is not None and stream.isatty() else None
    except ValueError:  # closed
        return None


class _NotThisLogger(logging.Filter):
    """Keeps chunk lines and phase announcements off the terminal while the bar is drawn (phases are written
    above the bar instead)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name not in (LOG.name, progress_events.LOG.name)


class ChunkProgress:
    """A progress bar over chunks that starts at the number already done (resume)."""

    def __init__(self, total: int, done: int = 0, enabled: bool = True, columns_total: int = 0,
                 columns_done: int = 0) -> None:
        self.total = total
        self.done = done
        self.enabled = enabled
        self.columns_total = columns_total
        self.columns_done = columns_done
        self._bar = None
        self._clock = time.monotonic()
        self._columns_at_clock = columns_done
        self._stop_listening = lambda: None
        self._muted: list[logging.Handler] = []
        self._filter = _NotThisLogger()

    def __enter__(self) -> "ChunkProgress":
        screen = terminal() if self.enabled and progress_events.bar_wanted() else None
        self._clock = time.monotonic()
        self._stop_listening = progress_events.add_listener(self._on_event)
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

    def _on_event(self, event: dict[str, Any]) -> None:
        """A phase is printed above the bar; when the warm-up ends, the rate is measured from there."""
        if event.get("event") == "phase" and self._bar is not None:
            self._bar.write(str(event.get("message", "")), file=self._bar.fp)
        if event.get("phase") == "warm-up" and event.get("status") == "done":
            self._clock = time.monotonic()
            self._columns_at_clock = self.columns_done
            if self._bar is not None:
                self._bar.start_t = self._bar.last_print_t = self._bar._time()  # noqa: SLF001 - tqdm's own clock, for its rate and ETA

    def _chunk_event(self, result: ChunkResult) -> dict[str, Any]:
        elapsed = time.monotonic() - self._clock
        measured = self.columns_done - self._columns_at_clock
        left = max(self.columns_total - self.columns_done, 0)
        eta = round(elapsed / measured * left, 1) if measured > 0 else None
        return {"event": "chunk", "chunk_id": result.chunk_id, "done": self.done, "total": self.total,
                "columns_done": self.columns_done, "columns_total": self.columns_total,
                "seconds": round(result.seconds, 3), "elapsed_s": round(elapsed, 3), "eta_s": eta}

    def advance(self, result: ChunkResult) -> None:
        """Count one finished chunk and show its memory and duration."""
        self.done += 1
        self.columns_done += result.col_end - result.col_start
        progress_events.emit(self._chunk_event(result))
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
        self._stop_listening()
        for handler in self._muted:
            handler.removeFilter(self._filter)
        self._muted.clear()
        if self._bar is not None:
            self._bar.close()
