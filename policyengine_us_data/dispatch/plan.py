"""Predict a production build from measured inputs: wall time, container-hours, memory, fits the ceiling or not.

The model follows what the Modal dispatcher does. Chunks go in contiguous batches of ceil(n / containers), at most
`max_containers` at once; every container pays its cold start, the policyengine-us import and the first-simulation
warm-up, then runs its batch. Batches are contiguous in plan order, so similar chunks sit together (in the state
plan, the small-state groups at the end): the slowest batch is taken as a whole batch of p95 chunks. Assembly runs
after the last batch on the coordinator. Modal retries a dead container up to `retries` times; the worst case
shown is the slowest batch dying at its last chunk each time (a retry skips the committed chunks, so each costs
one start-up and one p95 chunk). Container-hours count the workers only: every container's start-up plus the
total chunk work at the mean chunk time.

An input that was not measured is None; it counts as 0 s and `missing` names it, so the plan is a lower bound
and says so. Nothing here has a default guess.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from policyengine_us_data.errors import InputError


@dataclass(frozen=True)
class ChunkTimes:
    """Measured chunks of one plan kind at one chunk size: their wall seconds and the largest peak RSS."""

    seconds: tuple[float, ...]
    peak_rss_gb: float | None
    columns: int  # summed over the measured chunks

    def __post_init__(self) -> None:
        if not self.seconds or min(self.seconds) <= 0:
            raise InputError("need at least one measured chunk with a positive time: measure chunks first")

    @property
    def mean(self) -> float:
        return sum(self.seconds) / len(self.seconds)

    @property
    def median(self) -> float:
        return percentile(self.seconds, 50)

    @property
    def p95(self) -> float:
        return percentile(self.seconds, 95)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), without numpy."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class PlanInputs:
    """What the plan is computed from; None means not measured."""

    chunk: ChunkTimes
    import_s: float | None
    warm_up_s: float | None
    cold_start_s: float | None
    assembly_s_per_nnz: float | None
    nnz_per_column: float | None

    def missing(self) -> list[str]:
        """Names of the inputs that were not measured (each counted as 0 s)."""
        names = {"policyengine-us import": self.import_s, "first-simulation warm-up": self.warm_up_s,
                 "container cold start": self.cold_start_s, "assembly time": self.assembly_s_per_nnz,
                 "non-zeros per column": self.nnz_per_column, "peak memory": self.chunk.peak_rss_gb}
        return [name for name, value in names.items() if value is None]


@dataclass(frozen=True)
class Shape:
    """The production build: its columns, the chosen plan's chunk count, and the Modal limits."""

    n_columns: int
    n_chunks: int
    workers: int
    max_containers: int
    retries: int
    worker_memory_gb: float
    ceiling_h: float = 14.0

    def __post_init__(self) -> None:
        if min(self.n_columns, self.n_chunks, self.workers, self.max_containers) < 1 or self.retries < 0:
            raise InputError(f"need columns, chunks, workers and max containers >= 1 and retries >= 0: {self}")
        if self.worker_memory_gb <= 0 or self.ceiling_h <= 0:
            raise InputError("worker memory and the time ceiling must be positive")


@dataclass(frozen=True)
class ProductionPlan:
    """The prediction for one plan kind (seconds unless named in hours)."""

    shape: Shape
    inputs: PlanInputs
    chunks_per_container: int
    containers: int
    startup_s: float
    slowest_batch_s: float
    assembly_s: float
    wall_s: float
    wall_with_retries_s: float
    serial_s: float
    container_hours: float

    @property
    def fits(self) -> bool:
        """The worst case, every retry spent on the slowest batch, still ends within the ceiling."""
        return self.wall_with_retries_s <= self.shape.ceiling_h * 3600

    @property
    def memory_fits(self) -> bool | None:
        peak = self.inputs.chunk.peak_rss_gb
        return None if peak is None else peak <= self.shape.worker_memory_gb


def plan_production(inputs: PlanInputs, shape: Shape) -> ProductionPlan:
    """Wall time and container-hours of `shape` from `inputs` (see the module docstring for the model)."""
    parallel = min(shape.workers, shape.max_containers, shape.n_chunks)
    per_container = math.ceil(shape.n_chunks / parallel)
    containers = math.ceil(shape.n_chunks / per_container)
    startup = sum(v or 0.0 for v in (inputs.cold_start_s, inputs.import_s, inputs.warm_up_s))
    chunk = inputs.chunk
    slowest = per_container * chunk.p95
    assembly = (inputs.assembly_s_per_nnz or 0.0) * (inputs.nnz_per_column or 0.0) * shape.n_columns
    wall = startup + slowest + assembly
    work = shape.n_chunks * chunk.mean
    return ProductionPlan(
        shape=shape, inputs=inputs, chunks_per_container=per_container, containers=containers, startup_s=startup,
        slowest_batch_s=slowest, assembly_s=assembly, wall_s=wall,
        wall_with_retries_s=wall + shape.retries * (startup + chunk.p95),
        serial_s=startup + work + assembly, container_hours=(containers * startup + work) / 3600,
    )


def hms(seconds: float) -> str:
    whole = int(round(seconds))
    return f"{whole // 3600:d}h{whole % 3600 // 60:02d}m{whole % 60:02d}s"


def _rows(plan: ProductionPlan) -> list[tuple[str, str]]:
    c, shape = plan.inputs.chunk, plan.shape
    peak = "NOT MEASURED" if c.peak_rss_gb is None else f"{c.peak_rss_gb:.1f} GB"
    memory = {None: "?", True: "yes", False: "NO"}[plan.memory_fits]
    return [
        ("chunks", f"{shape.n_chunks:,}"),
        ("chunks per container x containers", f"{plan.chunks_per_container} x {plan.containers}"),
        ("measured chunks (columns)", f"{len(c.seconds)} ({c.columns:,})"),
        ("chunk s: median / p95", f"{c.median:.1f} / {c.p95:.1f}"),
        (f"peak RSS (fits {shape.worker_memory_gb:g} GB)", f"{peak} ({memory})"),
        ("start-up per container", f"{plan.startup_s:.0f} s"),
        ("slowest batch (all at p95)", hms(plan.slowest_batch_s)),
        ("assembly", hms(plan.assembly_s)),
        ("wall time", hms(plan.wall_s)),
        (f"wall, slowest batch retried {shape.retries}x", hms(plan.wall_with_retries_s)),
        (f"fits {shape.ceiling_h:g} h", "yes" if plan.fits else "NO"),
        ("worker container-hours", f"{plan.container_hours:.2f}"),
        ("one worker, serial", hms(plan.serial_s)),
    ]


def format_plans(plans: dict[str, ProductionPlan]) -> str:
    """A side-by-side table of the plans (kind -> plan), their ratios, and every unmeasured input, loudly."""
    kinds = list(plans)
    table = {kind: dict(_rows(plan)) for kind, plan in plans.items()}
    labels = [label for label, _ in _rows(plans[kinds[0]])]
    lines = [f"  {'':36s}" + "".join(f"{kind:>18s}" for kind in kinds)]
    lines += [f"  {label:36s}" + "".join(f"{table[kind][label]:>18s}" for kind in kinds) for label in labels]
    if "contiguous" in plans and len(plans) > 1:
        base = plans["contiguous"]
        for kind, plan in plans.items():
            if kind != "contiguous":
                lines.append(f"  contiguous / {kind}: container-hours {base.container_hours / plan.container_hours:.2f}x,"
                             f" wall time {base.wall_s / plan.wall_s:.2f}x")
    missing = sorted({name for plan in plans.values() for name in plan.inputs.missing()})
    if missing:
        lines.append(f"  NOT MEASURED: {', '.join(missing)}; each counted as 0 s, so the times above are lower bounds")
    return "\n".join(lines)
