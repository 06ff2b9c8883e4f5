"""Progress for a chunked build: chunks done, rate, ETA and memory, via tqdm.

tqdm does the rate and ETA arithmetic and the terminal handling; this wrapper only decides what
to show and writes one plain log line per chunk when output is not a terminal (CI, log files).
"""

from __future__ import annotations

import logging
import sys

import psutil
from tqdm import tqdm

from policyengine_us_data.calibration.chunk_plan import ChunkResult

LOG = logging.getLogger(__name__)


class ChunkProgress:
    """A progress bar over chunks that starts at the number already done (resume)."""

    def __init__(self, total: int, done: int = 0, enabled: bool = True) -> None:
        self.total = total
        self.done = done
        self.enabled = enabled
        self._bar = None

    def __enter__(self) -> "ChunkProgress":
        if self.enabled:
            self._bar = tqdm(
                total=self.total,
                initial=self.done,
                unit="chunk",
                desc="chunks",
                file=sys.stderr,
                dynamic_ncols=True,
                disable=None,  # off when stderr is not a terminal
            )
        return self

    def advance(self, result: ChunkResult) -> None:
        """Count one finished chunk and show its memory and duration."""
        self.done += 1
        rss = psutil.Process().memory_info().rss / 2**20
        if self._bar is not None and not self._bar.disable:
            self._bar.set_postfix(rss=f"{rss:.0f}MB", last=f"{result.seconds:.1f}s", refresh=False)
            self._bar.update(1)
        elif self.enabled:
            LOG.info(
                "chunk %d done (%d/%d): %d non-zeros in %.1f s, worker peak %.0f MB",
                result.chunk_id, self.done, self.total, result.nnz, result.seconds, result.peak_rss_mb,
            )

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()
