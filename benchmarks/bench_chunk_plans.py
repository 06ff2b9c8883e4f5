"""State-major against contiguous chunk plans: cost per column and peak memory of real chunks, side by side.

Both plans partition the same production-shaped geography (the embedded 1,000 households x 430 clones by
default: every state holds thousands of columns, as in production) at the same chunk size. A contiguous chunk
holds ~51 states; a state-major chunk holds one. For each size the script runs `--chunks` chunks of each plan,
evenly spaced through the plan (the state plan's order runs from the largest state to the smallest), with the
real kernel (policyengine-us, all default targets: three simulations per chunk), each in a child forked from
one warmed-up parent so that each chunk's peak RSS is its own. It prints each chunk, then per plan the mean
wall and simulation seconds, the cost per column and the largest peak RSS, and the ratios; then the production
plan (`plan_production`: 12,000 households x 430 clones on 50 workers, 100 s of import and warm-up per container)
each plan's measured cost per column predicts at each size, and the ratio of container-hours.

    .venv/bin/python benchmarks/bench_chunk_plans.py --sizes 2000 8000 --chunks 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from policyengine_us_data.calibration.build_state import load_build_state  # noqa: E402
from policyengine_us_data.calibration.chunk_kernel import peak_rss_mb, run_chunk, warm_up  # noqa: E402
from policyengine_us_data.calibration.chunk_dispatch.plan import plan_production  # noqa: E402
from policyengine_us_data.calibration.chunk_plan import ChunkPlan, chunk_columns, partition_plan  # noqa: E402
from policyengine_us_data.calibration.geography import assign_geography  # noqa: E402
from bench_kernel import state_with_clones  # noqa: E402  (the same build state as the kernel benchmark)

PLANS = ("contiguous", "state")
PRODUCTION = (12_000, 430, 50)  # households, clones, workers


def sample_chunks(kind: str, state_fips: np.ndarray, size: int, count: int) -> list[tuple[int, int, int]]:
    """`count` chunks of the plan, evenly spaced, among those holding at least 90% of `size` columns."""
    full = [c for c in partition_plan(kind, state_fips, size) if c[2] - c[1] >= 0.9 * size]
    picks = np.linspace(0, len(full) - 1, count).round().astype(int)
    return [full[i] for i in sorted(set(picks.tolist()))]


def _child(plan: ChunkPlan, state: str, pipe) -> None:
    result = run_chunk(plan, state)
    pipe.send({"wall": result.seconds, "simulate": result.timings.get("simulate", 0.0), "nnz": result.nnz,
               "rss": peak_rss_mb()})
    pipe.close()
    os._exit(0)


def time_chunk(kind: str, chunk: tuple[int, int, int], state: Path, root: Path) -> dict:
    """Run one chunk in a forked child (warm, like a pool worker); its own peak RSS comes back with it."""
    chunk_id, start, end = chunk
    plan = ChunkPlan(chunk_id, start, end, str(root / f"{kind}_{end - start}_{chunk_id:06d}.npz"), "bench", kind)
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(plan, str(state), send))
    process.start()
    row = receive.recv()
    process.join()
    inputs = load_build_state(state)
    columns = chunk_columns(kind, inputs.geography.state_fips, start, end)
    return {**row, "columns": end - start, "states": len(np.unique(inputs.geography.state_fips[columns]))}


def summarise(rows: list[dict]) -> dict:
    columns = sum(r["columns"] for r in rows)
    return {"wall": sum(r["wall"] for r in rows) / len(rows), "simulate": sum(r["simulate"] for r in rows) / len(rows),
            "ms_per_column": 1000 * sum(r["wall"] for r in rows) / columns,
            "sim_ms_per_column": 1000 * sum(r["simulate"] for r in rows) / columns,
            "rss": max(r["rss"] for r in rows), "states": sum(r["states"] for r in rows) / len(rows)}


def run_size(size: int, count: int, state: Path, root: Path) -> dict:
    state_fips = load_build_state(state).geography.state_fips
    out = {}
    for kind in PLANS:
        rows = []
        for chunk in sample_chunks(kind, state_fips, size, count):
            row = time_chunk(kind, chunk, state, root)
            rows.append(row)
            print(f"  {kind:<11} chunk {chunk[0]:>4}: {row['columns']:>6} cols {row['states']:>3} states  "
                  f"wall {row['wall']:7.1f} s  simulate {row['simulate']:7.1f} s  peak {row['rss']:7.0f} MB", flush=True)
        out[kind] = summarise(rows)
    return out


def print_table(results: dict[int, dict]) -> None:
    print(f"\n{'cols':>6} {'plan':<11} {'states':>6} {'wall s':>8} {'sim s':>8} {'ms/col':>8} {'peak MB':>8}")
    for size, plans in results.items():
        for kind in PLANS:
            r = plans[kind]
            print(f"{size:>6} {kind:<11} {r['states']:6.1f} {r['wall']:8.1f} {r['simulate']:8.1f} "
                  f"{r['ms_per_column']:8.2f} {r['rss']:8.0f}")
        c, s = plans["contiguous"], plans["state"]
        print(f"{size:>6} {'ratio':<11} {'':>6} contiguous / state: wall {c['wall'] / s['wall']:.2f}x, simulation "
              f"{c['simulate'] / s['simulate']:.2f}x, cost per column {c['ms_per_column'] / s['ms_per_column']:.2f}x, "
              f"peak RSS {c['rss'] / s['rss']:.2f}x")


def print_production(results: dict[int, dict]) -> None:
    """Scale each plan's measured cost per column to production's column count and chunk count."""
    households, clones, workers = PRODUCTION
    fips = assign_geography(households, clones, seed=0).state_fips
    print(f"\nproduction plan ({households:,} households x {clones} clones, {workers} workers, 100 s import):")
    for size, plans in results.items():
        hours = {}
        for kind in PLANS:
            r, n_chunks = plans[kind], len(partition_plan(kind, fips, size))
            plan = plan_production(r["ms_per_column"] / 1000 * len(fips) / n_chunks, r["rss"] / 1024,
                                   n_chunks=n_chunks, workers=workers, import_s=100.0)
            hours[kind] = plan.parallel_container_hours
            print(f"{size:>6} {kind:<11} {n_chunks:>5} chunks of {plan.per_chunk_seconds:7.1f} s: wall "
                  f"{plan.parallel_seconds / 3600:6.2f} h, {plan.parallel_container_hours:7.2f} container-h")
        print(f"{size:>6} {'ratio':<11} contiguous / state container-hours: {hours['contiguous'] / hours['state']:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000], help="chunk sizes (columns)")
    parser.add_argument("--chunks", type=int, default=2, help="chunks of each plan to run per size")
    parser.add_argument("--clones", type=int, default=430, help="clones of the 1,000 embedded households")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-plans-") as tmp:
        root = Path(tmp)
        state = state_with_clones(root, args.clones)
        start = time.perf_counter()
        warm_up(str(state))
        print(f"one-off warm-up of the parent (import, first simulation): {time.perf_counter() - start:.1f} s; "
              f"{load_build_state(state).n_columns:,} columns\n")
        results = {}
        for size in args.sizes:
            results[size] = run_size(size, args.chunks, state, root)
        print_table(results)
        print_production(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
