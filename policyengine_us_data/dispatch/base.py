"""The dispatcher seam: where chunks run is the dispatcher's business, never the coordinator's.

Every backend runs the same kernel (`chunk_kernel.run_chunk(plan, state_dir) -> ChunkResult`) through
`run_outcome`, which turns one kernel call into a plain, JSON-able outcome dict. A failure is data, not
an exception, so one bad chunk never stops the others and an outcome crosses a process pool or a Modal
call unchanged. Only KeyboardInterrupt (and other BaseExceptions) propagate: that is the user stopping us.
"""

from __future__ import annotations

import abc
import contextlib
import importlib
import os
import re
import socket
import time
import traceback
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from policyengine_us_data.shards.chunk_plan import ChunkPlan, ChunkResult
from policyengine_us_data.errors import ArtifactError, InputError
from policyengine_us_data.utils.atomic import TEMP_PREFIX

Kernel = Callable[[ChunkPlan, str], ChunkResult]
ResultCallback = Callable[[ChunkResult], None]

KERNEL_MODULE = "policyengine_us_data.kernel.chunk_kernel"
SHARDS_MODULE = "policyengine_us_data.shards.shards"
DEFAULT_MAX_RETRIES = 2
TRACEBACK_LINES = 25
TRACEBACK_CHARS = 4000
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class ChunkFailure:
    """A chunk that failed on every attempt: what went wrong, where, and how often we tried."""

    chunk_id: int
    error: str
    traceback_excerpt: str
    attempts: int

    def to_json(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk_id,
            "error": self.error,
            "traceback_excerpt": self.traceback_excerpt,
            "attempts": self.attempts,
        }


@dataclass
class DispatchReport:
    """The outcome of one `dispatch` call: every chunk is in `results`, `failures` or `skipped`."""

    results: list[ChunkResult] = field(default_factory=list)
    failures: list[ChunkFailure] = field(default_factory=list)
    worker_timings: dict[str, list[tuple[int, float, float]]] = field(default_factory=dict)
    wall_seconds: float = 0.0
    skipped: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def add_timing(self, worker: str, chunk_id: int, start: float, end: float) -> None:
        self.worker_timings.setdefault(worker, []).append((int(chunk_id), float(start), float(end)))

    def finish(self, started: float) -> "DispatchReport":
        """Sort for deterministic reports and stamp the wall time."""
        self.results.sort(key=lambda r: r.chunk_id)
        self.failures.sort(key=lambda f: f.chunk_id)
        self.skipped.sort()
        for spans in self.worker_timings.values():
            spans.sort(key=lambda span: span[1])
        self.wall_seconds = time.perf_counter() - started
        return self


class ChunkDispatcher(abc.ABC):
    """Runs the kernel for each plan somewhere and reports results as they arrive."""

    @abc.abstractmethod
    def dispatch(
        self,
        plans: Sequence[ChunkPlan],
        state_dir: str,
        on_result: ResultCallback | None = None,
    ) -> DispatchReport:
        """Run every plan; return when each chunk is done, skipped, or listed as failed after retries."""

    def shard_dir(self, local: Path) -> Path:
        """Where this backend's shards land, the one place that decides it: `local` (the caller's chunk
        directory) unless the backend writes them elsewhere (Modal: the run's directory on the volume)."""
        return Path(local)


def default_kernel() -> Kernel:
    """The real kernel, imported by dotted name so this module imports before (and without) it."""
    return importlib.import_module(KERNEL_MODULE).run_chunk


def default_warm_up() -> Callable[[str], None]:
    """The kernel's warm-up: import policyengine-us and run one tiny simulation in this process."""
    return importlib.import_module(KERNEL_MODULE).warm_up


def worker_name() -> str:
    """A stable label for the process running a chunk (host and pid)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def traceback_excerpt(exc: BaseException) -> str:
    """The last lines of a traceback: enough to see where it broke, small enough for a manifest."""
    lines = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).splitlines()
    text = "\n".join(lines[-TRACEBACK_LINES:])
    return text[-TRACEBACK_CHARS:]


def run_outcome(kernel: Kernel, plan: ChunkPlan, state_dir: str) -> dict[str, Any]:
    """Run one chunk and describe what happened as a JSON-able dict (never raises an Exception)."""
    who = worker_name()
    start = time.time()
    try:
        result = kernel(plan, state_dir)
    except Exception as exc:  # noqa: BLE001 - a failed chunk is reported, not raised
        return {
            "chunk_id": plan.chunk_id,
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback_excerpt(exc),
            # an error that says so (e.g. a non-finite cell) would come back the same on every attempt
            "retry": bool(getattr(exc, "retryable", True)),
            "worker": who,
            "start": start,
            "end": time.time(),
        }
    end = time.time()
    result = replace(
        result,
        worker=result.worker or who,
        started=result.started or start,
        finished=result.finished or end,
    )
    return {"chunk_id": plan.chunk_id, "ok": True, "result": result.to_json(),
            "worker": who, "start": start, "end": end}


class RetryBook:
    """Counts attempts per chunk and turns outcomes into results, retries or final failures."""

    def __init__(self, report: DispatchReport, max_retries: int, on_result: ResultCallback | None) -> None:
        if max_retries < 0:
            raise InputError(f"max_retries must be >= 0, got {max_retries}")
        self.report = report
        self.max_attempts = max_retries + 1
        self.on_result = on_result
        self.attempts: dict[int, int] = {}

    def start(self, chunk_id: int) -> None:
        self.attempts[chunk_id] = self.attempts.get(chunk_id, 0) + 1

    def record(self, outcome: dict[str, Any]) -> bool:
        """Book one outcome; True means the chunk should be tried again."""
        chunk_id = int(outcome["chunk_id"])
        if outcome.get("ok") and outcome.get("reused"):  # a verified shard a retried worker found on the volume
            self.report.skipped.append(chunk_id)
            return False
        self.report.add_timing(outcome.get("worker", "?"), chunk_id, outcome.get("start", 0.0), outcome.get("end", 0.0))
        if outcome.get("fatal"):  # retrying cannot help (e.g. a stale deploy): fail now
            error = str(outcome.get("error", "unknown error"))
            self.report.failures.append(ChunkFailure(chunk_id, error, str(outcome.get("traceback", "")),
                                                     self.attempts.get(chunk_id, 1)))
            return False
        if outcome.get("ok"):
            result = ChunkResult.from_json(outcome["result"])
            self.report.results.append(result)
            if self.on_result is not None:
                self.on_result(result)
            return False
        return self.fail(chunk_id, str(outcome.get("error", "unknown error")), str(outcome.get("traceback", "")),
                         retry=bool(outcome.get("retry", True)))

    def fail(self, chunk_id: int, error: str, excerpt: str = "", retry: bool = True) -> bool:
        """Book a failed attempt; list the chunk as failed once it has used every attempt (or at once when the
        error is not worth retrying)."""
        attempts = self.attempts.get(chunk_id, 1)
        if retry and attempts < self.max_attempts:
            return True
        self.report.failures.append(ChunkFailure(chunk_id, error, excerpt, attempts))
        return False


def check_unique(plans: Sequence[ChunkPlan]) -> None:
    """Two plans with one chunk id would race for one shard."""
    seen: set[int] = set()
    for plan in plans:
        if plan.chunk_id in seen:
            raise InputError(f"chunk id {plan.chunk_id} is planned twice: each chunk must appear once")
        seen.add(plan.chunk_id)


def remove_partial_shards(plans: Iterable[ChunkPlan]) -> list[Path]:
    """Delete temp files a killed writer left beside these plans' shards; whole shards stay."""
    removed: list[Path] = []
    for plan in plans:
        target = Path(plan.shard_path)
        if not target.parent.is_dir():
            continue
        for tmp in target.parent.glob(f"{TEMP_PREFIX}{target.name}*"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def validate_run_id(run_id: str) -> str:
    """A run id names a directory on a shared volume: no separators, no `..`, nothing exotic."""
    if (
        not isinstance(run_id, str)
        or not RUN_ID_PATTERN.match(run_id)
        or ".." in run_id
        or "/" in run_id
        or "\\" in run_id
    ):
        raise InputError(
            f"invalid run id {run_id!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or "
            "digit, with no '/' and no '..' (e.g. --run-id 2024-06-01-full)"
        )
    return run_id


def shard_verifies(plan: ChunkPlan, *, deep: bool) -> bool:
    """True if the plan's shard is whole and from this build (`shards.verify_shard` when present)."""
    path = Path(plan.shard_path)
    if not path.is_file():
        return False
    try:
        shards = importlib.import_module(SHARDS_MODULE)
    except ImportError:
        return zipfile.is_zipfile(path)
    try:
        shards.verify_shard(
            path,
            deep=deep,
            lineage_signature=plan.lineage_signature,
            expect_chunk=(plan.chunk_id, plan.col_start, plan.col_end),
        )
    except (ArtifactError, OSError, ValueError):
        return False
    return True
