"""The pure per-chunk kernel: (chunk plan, shared build state) -> one shard.

The kernel knows arrays; the dispatcher knows where it runs. Its inputs are a small plan and the
path of the read-only build state (the plan's global columns follow from the state's geography),
so the same function runs in-process, in a forked worker and inside a Modal container. Each
(variable, domain, reform) value vector is computed once per chunk, then every row of that group
picks the columns inside its geography (a vectorised join on the column's state or district), so
436 district rows cost one value vector, not 436.
"""

from __future__ import annotations

import os
import resource
import socket
import time
from dataclasses import dataclass, field

import numpy as np

from policyengine_us_data.kernel.build_state import BuildInputs, load_build_state
from policyengine_us_data.shards.chunk_plan import ChunkPlan, ChunkResult, chunk_columns
from policyengine_us_data.kernel.cell_rules import household_values, is_count_variable
from policyengine_us_data.targets.constraints import RowGroup
from policyengine_us_data.kernel.entity_clone import materialise_columns
from policyengine_us_data.shards.shards import write_shard
from policyengine_us_data.kernel.simulator import SimulationRequest, Simulator, get_simulator
from policyengine_us_data.geo_levels import DISTRICT, NATIONAL, STATE
from policyengine_us_data.utils.crash_points import crash_point



@dataclass
class ChunkEntries:
    """The non-zero cells of one set of columns, plus what it took to compute them."""

    rows: np.ndarray
    cols: np.ndarray
    vals: np.ndarray
    households: int
    persons: int
    timings: dict[str, float] = field(default_factory=dict)


def simulation_request(inputs: BuildInputs, simulator: Simulator) -> SimulationRequest:
    """What to simulate for this build's target rows."""
    cache = inputs.cache
    targets = tuple(
        sorted({g.variable for g in cache.groups if g.reform_id == 0 and not is_count_variable(g.variable)})
    )
    return SimulationRequest(
        target_variables=targets,
        person_variables=tuple(sorted(cache.constraint_variables)),
        reform_variables=tuple(sorted(cache.reform_variables)),
    )


def _column_geo_ids(inputs: BuildInputs, columns: np.ndarray) -> dict[int, np.ndarray]:
    geography = inputs.geography
    return {
        NATIONAL: np.zeros(len(columns), dtype=np.int64),
        STATE: geography.state_fips[columns].astype(np.int64),
        DISTRICT: geography.cd_geoid[columns].astype(np.int64),
    }


def group_entries(
    group: RowGroup, values: np.ndarray, cache, column_geo: dict[int, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, local column, value) for every row of the group and every column in its geography."""
    nonzero = np.flatnonzero(values)
    rows_out, cols_out = [], []
    for level in (NATIONAL, STATE, DISTRICT):
        level_rows = group.rows[cache.geo_level[group.rows] == level]
        if len(level_rows) == 0 or len(nonzero) == 0:
            continue
        ids = cache.geo_id[level_rows].astype(np.int64)
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        col_ids = column_geo[level][nonzero]
        left = np.searchsorted(sorted_ids, col_ids, "left")
        counts = np.searchsorted(sorted_ids, col_ids, "right") - left
        local = np.repeat(nonzero, counts)
        starts = np.repeat(left, counts)
        offsets = np.arange(len(local)) - np.repeat(np.cumsum(counts) - counts, counts)
        rows_out.append(level_rows[order][starts + offsets])
        cols_out.append(local)
    if not rows_out:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    rows = np.concatenate(rows_out).astype(np.int64)
    cols = np.concatenate(cols_out).astype(np.int64)
    return rows, cols, values[cols]


class NonFiniteCellError(ValueError):
    """A cell came out NaN or infinite: the matrix must hold only finite numbers, so the chunk fails.

    Deterministic (same inputs, same cell), so the dispatcher does not retry it."""

    retryable = False


def check_finite(group: RowGroup, values: np.ndarray, inputs: BuildInputs, columns: np.ndarray,
                 chunk_id: int | None) -> None:
    """Raise NonFiniteCellError naming the chunk, the first bad column's household and the variable."""
    bad = np.flatnonzero(~np.isfinite(values))
    if not len(bad):
        return
    column = int(columns[bad[0]])
    clone, record = divmod(column, inputs.n_records)
    household_id = np.asarray(inputs.data.arrays["household_id"])[record].item()
    where = f"chunk {chunk_id}" if chunk_id is not None else f"{len(columns)} columns"
    domain = "[" + ",".join(c.label for c in group.domain) + "]" if group.domain else ""
    reform = f" (reform row of {group.variable})" if group.reform_id else ""
    raise NonFiniteCellError(
        f"{where}: {len(bad)} cell(s) of {group.variable}{domain}{reform} are not finite (first: {float(values[bad[0]])}) "
        f"at column {column}: household_id {household_id} (base record {record}, clone {clone}); check that "
        f"household's inputs, or the simulator's formula for {group.variable}")


def compute_entries(inputs: BuildInputs, columns: np.ndarray, simulator: Simulator | None = None,
                    chunk_id: int | None = None) -> ChunkEntries:
    """Simulate the given global columns and return their non-zero cells (global columns).

    Every cell depends on its column alone (take-up draws are keyed by column), so any set of
    columns gives the same cells for the columns it shares with another. A NaN or infinite cell
    raises NonFiniteCellError (naming `chunk_id` when given) instead of reaching a shard.
    """
    columns = np.asarray(columns, dtype=np.int64)
    simulator = simulator or get_simulator(inputs.simulator)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    data = materialise_columns(inputs.data, inputs.geography, columns, rerandomize_takeup=inputs.rerandomize_takeup)
    timings["materialise"] = time.perf_counter() - t
    t = time.perf_counter()
    out = simulator.compute(data, simulation_request(inputs, simulator))
    timings["simulate"] = time.perf_counter() - t
    t = time.perf_counter()
    column_geo = _column_geo_ids(inputs, columns)
    parts = []
    for g in inputs.cache.groups:
        values = household_values(g, data, out, simulator.entity_of)
        check_finite(g, values, inputs, columns, chunk_id)
        parts.append(group_entries(g, values, inputs.cache, column_geo))
    rows = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
    cols = columns[np.concatenate([p[1] for p in parts])] if parts else np.zeros(0, dtype=np.int64)
    vals = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0)
    timings["emit"] = time.perf_counter() - t
    return ChunkEntries(rows, cols, vals, data.n_households, data.n_persons, timings)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_chunk(plan: ChunkPlan, state_dir: str) -> ChunkResult:
    """Compute one chunk and write its shard atomically; return a small result record."""
    started = time.time()
    inputs = load_build_state(state_dir)
    columns = chunk_columns(plan.kind, inputs.geography.state_fips, plan.col_start, plan.col_end)
    entries = compute_entries(inputs, columns, chunk_id=plan.chunk_id)
    crash_point("kernel-simulated")
    t = time.perf_counter()
    header = write_shard(
        plan.shard_path,
        entries.rows,
        entries.cols,
        entries.vals,
        chunk_id=plan.chunk_id,
        col_start=plan.col_start,
        col_end=plan.col_end,
        n_rows=inputs.n_rows,
        n_cols=inputs.n_columns,
        lineage_signature=plan.lineage_signature,
        columns=columns,
    )
    entries.timings["write"] = time.perf_counter() - t
    finished = time.time()
    return ChunkResult(
        chunk_id=plan.chunk_id,
        col_start=plan.col_start,
        col_end=plan.col_end,
        nnz=int(len(entries.vals)),
        households=int(entries.households),
        persons=int(entries.persons),
        seconds=finished - started,
        peak_rss_mb=peak_rss_mb(),
        checksum=str(getattr(header, "checksum", "")),
        worker=f"{socket.gethostname()}:{os.getpid()}",
        started=started,
        finished=finished,
        timings=entries.timings,
    )


def warm_up(state_dir: str) -> None:
    """Load the state and the simulator, and run one tiny simulation, before forking workers.

    Forked workers then share the imported policyengine-us system and its warmed caches
    copy-on-write instead of each paying the ~40 s import and first-simulation cost.
    """
    inputs = load_build_state(state_dir)
    n = min(inputs.n_columns, 2)
    if n:
        compute_entries(inputs, np.arange(n))
