"""Predict a production build from one measured chunk: wall time and container-hours, serial vs fanned out.

Serial: one container pays the cold start and the import once, then runs every chunk in turn.
Fanned out: chunks go in contiguous batches of ceil(n / workers); the wall time is one cold start, one
import and the longest batch. Container-hours count every container's cold start and import on top
of the same total chunk work, so fanning out costs a little more compute and far less wall time.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from policyengine_us_data.errors import InputError

GOAL_RATIO = 20.0


@dataclass(frozen=True)
class ProductionPlan:
    """The prediction and the inputs it came from (all times in seconds unless named in hours)."""

    n_chunks: int
    workers: int
    per_chunk_seconds: float
    per_chunk_rss_gb: float
    cold_start_s: float
    import_s: float
    serial_ceiling_h: float
    chunks_per_worker: int
    containers: int
    serial_seconds: float
    parallel_seconds: float
    serial_container_hours: float
    parallel_container_hours: float

    @property
    def ratio(self) -> float:
        """Serial wall time over parallel wall time."""
        return self.serial_seconds / self.parallel_seconds if self.parallel_seconds > 0 else math.inf

    @property
    def serial_fits(self) -> bool:
        return self.serial_seconds <= self.serial_ceiling_h * 3600

    @property
    def parallel_fits(self) -> bool:
        return self.parallel_seconds <= self.serial_ceiling_h * 3600

    @property
    def meets_goal(self) -> bool:
        """The issue's goal: parallel wall time under 1/20 of the serial one."""
        return self.ratio > GOAL_RATIO

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(ratio=self.ratio, serial_fits=self.serial_fits, parallel_fits=self.parallel_fits,
                   meets_goal=self.meets_goal)
        return out


def plan_production(
    per_chunk_seconds: float,
    per_chunk_rss_gb: float,
    n_chunks: int = 207,
    workers: int = 50,
    cold_start_s: float = 20.0,
    serial_ceiling_h: float = 14.0,
    import_s: float = 40.0,
) -> ProductionPlan:
    """Predict production wall time and container-hours from one chunk's measured seconds and RSS."""
    if per_chunk_seconds <= 0 or per_chunk_rss_gb <= 0:
        raise InputError("per-chunk seconds and RSS must be positive: measure one chunk first (bench_kernel)")
    if n_chunks < 1 or workers < 1:
        raise InputError(f"need at least one chunk and one worker, got n_chunks={n_chunks}, workers={workers}")
    if cold_start_s < 0 or import_s < 0 or serial_ceiling_h <= 0:
        raise InputError("cold start and import seconds must be >= 0 and the ceiling > 0")
    per_worker = math.ceil(n_chunks / workers)
    containers = math.ceil(n_chunks / per_worker)
    startup = cold_start_s + import_s
    work = n_chunks * per_chunk_seconds
    serial = startup + work
    parallel = startup + per_worker * per_chunk_seconds
    return ProductionPlan(
        n_chunks=n_chunks,
        workers=workers,
        per_chunk_seconds=float(per_chunk_seconds),
        per_chunk_rss_gb=float(per_chunk_rss_gb),
        cold_start_s=float(cold_start_s),
        import_s=float(import_s),
        serial_ceiling_h=float(serial_ceiling_h),
        chunks_per_worker=per_worker,
        containers=containers,
        serial_seconds=serial,
        parallel_seconds=parallel,
        serial_container_hours=serial / 3600,
        parallel_container_hours=(containers * startup + work) / 3600,
    )


def _hms(seconds: float) -> str:
    whole = int(round(seconds))
    return f"{whole // 3600:d}h{whole % 3600 // 60:02d}m{whole % 60:02d}s"


def format_plan(plan: ProductionPlan) -> str:
    """A short, plain-text table for `--plan`."""
    ceiling = plan.serial_ceiling_h * 3600
    verdict = "meets" if plan.meets_goal else "MISSES"
    fits = f"fits {plan.serial_ceiling_h:g} h"
    lines = [
        f"Production plan: {plan.n_chunks} chunks, {plan.workers} workers "
        f"({plan.chunks_per_worker} chunks per worker, {plan.containers} containers)",
        f"  measured per chunk : {plan.per_chunk_seconds:.1f} s, peak RSS {plan.per_chunk_rss_gb:.2f} GB",
        f"  per container      : cold start {plan.cold_start_s:.0f} s + policyengine-us import {plan.import_s:.0f} s",
        f"  {'':18s}   {'wall time':>12s} {'container-h':>12s} {fits:>10s}",
        f"  {'serial (1 worker)':18s} : {_hms(plan.serial_seconds):>12s} {plan.serial_container_hours:12.2f} "
        f"{'yes' if plan.serial_seconds <= ceiling else 'NO':>10s}",
        f"  {'parallel':18s} : {_hms(plan.parallel_seconds):>12s} {plan.parallel_container_hours:12.2f} "
        f"{'yes' if plan.parallel_seconds <= ceiling else 'NO':>10s}",
        f"  serial / parallel  : {plan.ratio:.1f}x ({verdict} the goal of > {GOAL_RATIO:g}x); "
        f"memory per container >= {plan.per_chunk_rss_gb:.1f} GB",
    ]
    return "\n".join(lines)
