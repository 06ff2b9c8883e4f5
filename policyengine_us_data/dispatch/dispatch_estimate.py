"""What `--dry-run` says about the dispatch step: how many chunks the plan makes, and how long they should
take, judged from the chunk times the last dispatch measured (never a guessed constant).

Cheap and read-only: the chunk count comes from the same clone geography and chunk plan the dataset and
dispatch steps compute (no simulator is loaded, nothing is written).
"""

from __future__ import annotations

from typing import Any

from policyengine_us_data.shards.chunk_plan import CONTIGUOUS, partition_plan
from policyengine_us_data.datasets.geography import assign_geography


def planned_chunks(n_households: int, n_clones: int, seed: int, chunk_plan: str, chunk_size: int) -> tuple[int, int]:
    """(chunks, columns) of the build: the dataset step's geography, cut by the dispatch step's plan (contiguous
    ranges need no geography: their count follows from the column count)."""
    columns = n_households * n_clones
    if chunk_plan == CONTIGUOUS:
        return -(-columns // chunk_size), columns
    geography = assign_geography(n_households, n_clones, seed)
    return len(partition_plan(chunk_plan, geography.state_fips, chunk_size)), columns


def measured_rate(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    """Seconds per column (worker time) over the chunks the last dispatch computed, plus its warm-up; None when
    nothing was measured."""
    results = [r for r in (summary or {}).get("results", []) if isinstance(r, dict)]
    columns = sum(int(r.get("col_end", 0)) - int(r.get("col_start", 0)) for r in results)
    seconds = sum(float(r.get("seconds", 0.0)) for r in results)
    if not results or columns <= 0 or seconds <= 0:
        return None
    return {"chunks_measured": len(results), "seconds_per_column": seconds / columns,
            "seconds_per_chunk": seconds / len(results), "warm_up_seconds": (summary or {}).get("warm_up_seconds")}


def estimate(n_columns: int, workers: int, rate: dict[str, Any] | None) -> float | None:
    """Wall seconds for `n_columns` on `workers` at the measured rate (plus the measured warm-up), or None."""
    if rate is None:
        return None
    return round(rate["seconds_per_column"] * n_columns / max(workers, 1) + (rate["warm_up_seconds"] or 0.0), 3)
