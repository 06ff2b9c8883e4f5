"""State-major against contiguous chunk plans, side by side; optionally the production plan's measurement manifest.

Both plans partition the same geography (by default the embedded 1,000 households x 430 clones; `--households
12000` gives production's 5.16 M columns, so the state plan's chunks mix states as production's do) at the same
chunk size. For each size the script runs `--chunks` chunks of each plan, evenly spaced through the plan (the
state plan's order runs from the largest state to the smallest), or with `--whole` every chunk, with the real
kernel (policyengine-us, all default targets: three simulations per chunk), each in a child forked from one
warmed-up parent, as a pool or Modal worker runs after its start-up, so that each chunk's peak RSS is a worker's.
It prints each chunk, then per plan and size the wall time (mean, median, p95), the simulation time, the cost per
column and the largest peak RSS, and the ratios contiguous / state. The load average is printed at the start and
end (the machine may be shared: compare ratios, not seconds, across runs).

`--manifest FILE` also records what `unified_calibration --plan --measured FILE` needs, all measured in this one
process: the policyengine-us import, the first-simulation warm-up (both timed before anything else imports
policyengine-us), every chunk's seconds and peak RSS, and the streaming assembly of synthetic shards with the
measured non-zeros per column (seconds per non-zero).

    .venv/bin/python benchmarks/bench_chunk_plans.py --sizes 2000 8000 --chunks 2
    .venv/bin/python benchmarks/bench_chunk_plans.py --households 12000 --sizes 25000 --chunks 3 \
        --contiguous-chunks 1 --manifest measured.json
    .venv/bin/python benchmarks/bench_chunk_plans.py --households 2000 --clones 20 --whole --sizes 25000 --state-size 1000
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

PLANS = ("contiguous", "state")


def timed_import() -> float:
    """Seconds to import policyengine-us in this process; refuses if something imported it already."""
    if "policyengine_us" in sys.modules:
        raise SystemExit("policyengine_us was imported before the timed import: the measurement would be wrong")
    start = time.perf_counter()
    import policyengine_us  # noqa: F401

    return time.perf_counter() - start


def sample_chunks(kind: str, state_fips: np.ndarray, size: int, count: int | None) -> list[tuple[int, int, int]]:
    """Every chunk of the plan (`count` None), or `count` evenly spaced among those holding >= 90% of `size`."""
    from policyengine_us_data.shards.chunk_plan import partition_plan

    chunks = partition_plan(kind, state_fips, size)
    if count is None:
        return chunks
    full = [c for c in chunks if c[2] - c[1] >= 0.9 * size]
    picks = np.linspace(0, len(full) - 1, count).round().astype(int)
    return [full[i] for i in sorted(set(picks.tolist()))]


def _child(plan, state: str, pipe) -> None:
    from policyengine_us_data.kernel.chunk_kernel import peak_rss_mb, run_chunk

    result = run_chunk(plan, state)
    pipe.send({"seconds": result.seconds, "simulate_s": result.timings.get("simulate", 0.0), "nnz": result.nnz,
               "peak_rss_mb": peak_rss_mb()})
    pipe.close()
    os._exit(0)


def time_chunk(kind: str, chunk: tuple[int, int, int], state: Path, root: Path) -> dict:
    """Run one chunk in a forked child (warm, like a pool worker); its own peak RSS comes back with it."""
    from policyengine_us_data.kernel.build_state import load_build_state
    from policyengine_us_data.shards.chunk_plan import ChunkPlan, chunk_columns

    chunk_id, start, end = chunk
    shard = root / f"{kind}_{end - start}_{chunk_id:06d}.npz"
    plan = ChunkPlan(chunk_id, start, end, str(shard), "bench", kind)
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(plan, str(state), send))
    process.start()
    row = receive.recv()
    process.join()
    shard.unlink(missing_ok=True)
    fips = load_build_state(state).geography.state_fips
    columns = chunk_columns(kind, fips, start, end)
    return {"chunk_id": chunk_id, "columns": end - start, "states": int(len(np.unique(fips[columns]))), **row}


def summarise(rows: list[dict]) -> dict:
    """Mean, median and p95 of the wall seconds, the summed and per-column costs, the largest peak."""
    walls = np.array([r["seconds"] for r in rows])
    columns = sum(r["columns"] for r in rows)
    return {"n": len(rows), "wall": float(walls.mean()), "median": float(np.median(walls)),
            "p95": float(np.percentile(walls, 95)), "wall_sum": float(walls.sum()),
            "simulate_sum": sum(r["simulate_s"] for r in rows), "simulate": sum(r["simulate_s"] for r in rows) / len(rows),
            "ms_per_column": 1000 * float(walls.sum()) / columns, "rss": max(r["peak_rss_mb"] for r in rows),
            "states": sum(r["states"] for r in rows) / len(rows), "states_sum": sum(r["states"] for r in rows)}


def run_plan(kind: str, size: int, count: int | None, state: Path, root: Path) -> list[dict]:
    from policyengine_us_data.kernel.build_state import load_build_state

    fips = load_build_state(state).geography.state_fips
    rows = []
    for chunk in sample_chunks(kind, fips, size, count):
        rows.append(time_chunk(kind, chunk, state, root))
        r = rows[-1]
        print(f"  {kind:<11} {size:>6} chunk {chunk[0]:>4}: {r['columns']:>6} cols {r['states']:>3} states  "
              f"wall {r['seconds']:7.1f} s  simulate {r['simulate_s']:7.1f} s  peak {r['peak_rss_mb']:7.0f} MB",
              flush=True)
    return rows


def print_table(runs: dict[str, dict[int, list[dict]]], whole: bool) -> None:
    print(f"\n{'plan':<11} {'cols':>6} {'n':>4} {'states':>6} {'wall s':>8} {'median':>8} {'p95':>8} {'sim s':>8} "
          f"{'ms/col':>8} {'peak MB':>8}")
    for kind, by_size in runs.items():
        for size, rows in by_size.items():
            s = summarise(rows)
            print(f"{kind:<11} {size:>6} {s['n']:>4} {s['states']:6.1f} {s['wall']:8.1f} {s['median']:8.1f} "
                  f"{s['p95']:8.1f} {s['simulate']:8.1f} {s['ms_per_column']:8.2f} {s['rss']:8.0f}")
    shared = sorted(set(runs["contiguous"]) & set(runs["state"]))
    for size in shared:
        c, s = summarise(runs["contiguous"][size]), summarise(runs["state"][size])
        print(f"ratio at {size}: contiguous / state: cost per column {c['ms_per_column'] / s['ms_per_column']:.2f}x, "
              f"simulation per column {per_column(runs['contiguous'][size]) / per_column(runs['state'][size]):.2f}x, "
              f"peak RSS {c['rss'] / s['rss']:.2f}x")
    if whole:
        print_whole(runs)


def print_whole(runs: dict[str, dict[int, list[dict]]]) -> None:
    """Each whole sample once per chunk size, and every contiguous / state pair of sizes: a whole sample is the
    same columns under each plan, so its summed simulation time compares them directly."""
    for kind, by_size in runs.items():
        for size, rows in by_size.items():
            s = summarise(rows)
            print(f"whole sample, {kind} at {size}: {s['n']} chunks ({s['states_sum']} chunk-states), simulation "
                  f"{s['simulate_sum']:.1f} s, wall {s['wall_sum']:.1f} s")
    for c_size, c_rows in runs.get("contiguous", {}).items():
        for s_size, s_rows in runs.get("state", {}).items():
            c, s = summarise(c_rows), summarise(s_rows)
            print(f"whole sample ratio contiguous at {c_size} / state at {s_size}: simulation "
                  f"{c['simulate_sum'] / s['simulate_sum']:.2f}x, chunk wall {c['wall_sum'] / s['wall_sum']:.2f}x")


def per_column(rows: list[dict]) -> float:
    """Simulation seconds per column."""
    return sum(r["simulate_s"] for r in rows) / sum(r["columns"] for r in rows)


def time_assembly(root: Path, nnz_per_column: float) -> dict:
    """Streaming assembly of 20 synthetic 25,000-column shards with the measured non-zeros per column."""
    from bench_assembly import N_ROWS, generate  # noqa: E402  (the assembly benchmark's shards)

    from policyengine_us_data.shards import csr_stream

    paths = generate(root / "assembly", 20, 25_000, nnz_per_column, seed=20240)
    start = time.perf_counter()
    matrix = csr_stream.assemble_csr(paths, N_ROWS, 20 * 25_000)
    seconds = time.perf_counter() - start
    print(f"streaming assembly: {matrix.nnz:,} non-zeros in {seconds:.2f} s")
    return {"method": "streaming two-pass (csr_stream.assemble_csr), local disk", "shards": 20,
            "nnz": int(matrix.nnz), "seconds": seconds}


def write_manifest(path: Path, args: argparse.Namespace, measured: dict, runs: dict, loads: list) -> None:
    from importlib.metadata import version

    from policyengine_us_data.utils.atomic import atomic_write_text

    chunks = [r for by_size in runs.values() for rows in by_size.values() for r in rows]
    nnz_per_column = sum(r["nnz"] for r in chunks) / sum(r["columns"] for r in chunks)
    manifest = {
        "format": "production-plan-measurements/1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "host": {"cpus": os.cpu_count(), "load_average_start": loads[0], "load_average_end": loads[-1]},
        "policyengine_us": version("policyengine-us"),
        "sample": {"households": args.households, "clones": args.clones, "targets": measured["targets"]},
        "import_s": measured["import_s"],
        "warm_up_s": measured["warm_up_s"],
        "nnz_per_column": nnz_per_column,
        "plans": {kind: {str(size): rows for size, rows in by_size.items()} for kind, by_size in runs.items()},
        "assembly": measured["assembly"],
    }
    atomic_write_text(path, json.dumps(manifest, indent=1) + "\n")
    print(f"\nmeasurement manifest: {path}\n  plan with: python -m policyengine_us_data.compat.unified_calibration "
          f"--plan --measured {path}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000], help="chunk sizes (columns)")
    parser.add_argument("--contiguous-sizes", type=int, nargs="*", default=None,
                        help="chunk sizes for the contiguous plan (default: --sizes; none: skip it)")
    parser.add_argument("--state-size", type=int, nargs="*", default=None,
                        help="chunk sizes for the state plan (default: --sizes)")
    parser.add_argument("--chunks", type=int, default=2, help="chunks of each plan to run per size")
    parser.add_argument("--contiguous-chunks", type=int, default=None, help="contiguous chunks per size (--chunks)")
    parser.add_argument("--whole", action="store_true", help="run every chunk of each plan (the whole sample)")
    parser.add_argument("--households", type=int, default=1000, help="synthetic households (1,000: the embedded ones)")
    parser.add_argument("--clones", type=int, default=430, help="clones of each household")
    parser.add_argument("--manifest", type=Path, default=None, help="write the production plan's measurements here")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    loads = [list(os.getloadavg())]
    print(f"load average at start: {loads[0][0]:.2f} {loads[0][1]:.2f} {loads[0][2]:.2f} ({os.cpu_count()} cpus)")
    import_s = timed_import()
    from bench_kernel import state_with_clones  # noqa: E402  (the same build state as the kernel benchmark)

    from policyengine_us_data.kernel.build_state import load_build_state
    from policyengine_us_data.kernel.chunk_kernel import warm_up

    with tempfile.TemporaryDirectory(prefix="bench-plans-") as tmp:
        root = Path(tmp)
        state = state_with_clones(root, args.clones, households=args.households)
        start = time.perf_counter()
        warm_up(str(state))
        warm_up_s = time.perf_counter() - start
        inputs = load_build_state(state)
        print(f"policyengine-us import {import_s:.1f} s; first-simulation warm-up {warm_up_s:.1f} s; "
              f"{inputs.n_columns:,} columns, {inputs.n_rows} targets\n", flush=True)
        count = None if args.whole else args.chunks
        sizes = {"contiguous": args.sizes if args.contiguous_sizes is None else args.contiguous_sizes,
                 "state": args.sizes if args.state_size is None else args.state_size}
        contiguous_count = count if args.contiguous_chunks is None or args.whole else args.contiguous_chunks
        runs = {kind: {size: run_plan(kind, size, contiguous_count if kind == "contiguous" else count, state, root)
                       for size in sizes[kind]} for kind in PLANS}
        loads.append(list(os.getloadavg()))
        print_table(runs, args.whole)
        print(f"\nload average at end: {loads[-1][0]:.2f} {loads[-1][1]:.2f} {loads[-1][2]:.2f}")
        if args.manifest:
            chunks = [r for by_size in runs.values() for rows in by_size.values() for r in rows]
            nnz_per_column = sum(r["nnz"] for r in chunks) / sum(r["columns"] for r in chunks)
            measured = {"import_s": import_s, "warm_up_s": warm_up_s, "targets": inputs.n_rows,
                        "assembly": time_assembly(root, nnz_per_column)}
            write_manifest(args.manifest, args, measured, runs, loads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
