"""Dispatch benchmark: the same chunked build with 1 local worker and with N forked workers, side by side.

Writes one set of inputs (synthetic households as an h5 dataset, a target database, a clone
geography), then runs each variant in a fresh process (this script with `--mode run`) so both pay
the same policyengine-us import and neither inherits the other's warm caches. Each variant calls
`UnifiedMatrixBuilder.prepare_state`, then
`ChunkedMatrixAssembler(..., dispatcher=LocalChunkDispatcher(workers=N)).build()`
(what `build_matrix_chunked` runs, minus its pandas targets frame).
Reported: import seconds, build seconds (the figure compared), speedup, peak RSS of the parent and
of its workers, and whether the matrices are identical (indptr, indices and data, byte for byte).

Goal on 2 idle cores: >= 1.7x. Neither variant can divide the process's first simulation (~35 s of
policyengine-us's lazy set-up: the parent's warm-up in the pool, the first chunk in the serial run), so
the ratio is about (35 + 16 t) / (35 + 8 t) for 16 chunks of t seconds each. The defaults (16 chunks of
1,000 columns, t ~ 16 s; production chunks are 25,000) measured 1.76x; 16 chunks of 500 gave 1.66x.

    .venv/bin/python benchmarks/bench_dispatch.py [--households 2000 --clones 8 --chunk-size 1000]
        [--workers 2] [--simulator policyengine|toy] [--no-warm-up]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TOY = "tests.support.toy_simulator:ToySimulator"
YEAR = 2024


def _targets(states: list[int], districts: list[int]):
    """A small, realistic mix: national, state and district rows on variables that compute on synthetic data."""
    from policyengine_us_data.targets.target_db import StratumSpec, TargetSpec

    strata = [StratumSpec(1), StratumSpec(2, (("age", ">=", 18),)), StratumSpec(3, (("snap", ">", 0),))]
    targets = [
        TargetSpec(1, "household_count", YEAR, 1, 1e6), TargetSpec(2, "person_count", YEAR, 2, 2e6),
        TargetSpec(3, "income_tax", YEAR, 1, 1e9), TargetSpec(4, "eitc", YEAR, 1, 1e8),
        TargetSpec(5, "snap", YEAR, 3, 1e8), TargetSpec(6, "adjusted_gross_income", YEAR, 1, 1e10),
        TargetSpec(7, "medicaid_enrolled", YEAR, 1, 1e5), TargetSpec(8, "household_net_income", YEAR, 1, 1e10),
    ]
    next_id = 4
    for fips in states:
        strata.append(StratumSpec(next_id, (("state_fips", "==", fips),)))
        targets += [TargetSpec(100 + next_id, "household_count", YEAR, next_id, 1e4),
                    TargetSpec(200 + next_id, "state_income_tax", YEAR, next_id, 1e6)]
        next_id += 1
    for geoid in districts:
        strata.append(StratumSpec(next_id, (("state_fips", "==", geoid // 100),
                                            ("congressional_district_geoid", "==", geoid))))
        targets.append(TargetSpec(300 + next_id, "adjusted_gross_income", YEAR, next_id, 1e8))
        next_id += 1
    return strata, targets


def prepare(inputs: Path, households: int, clones: int) -> None:
    from policyengine_us_data.datasets.geography import assign_geography
    from policyengine_us_data.targets.target_db import write_database
    from policyengine_us_data.datasets.h5io import write_dataset
    from policyengine_us_data.datasets.synthetic import generate_synthetic

    inputs.mkdir(parents=True, exist_ok=True)
    write_dataset(inputs / "dataset.h5", generate_synthetic(households, seed=7, period=YEAR))
    geography = assign_geography(households, clones, seed=3)
    geography.save(inputs / "geography.npz")
    states = sorted({int(s) for s in geography.state_fips})[:10]
    districts = sorted({int(d) for d in geography.cd_geoid})[:20]
    write_database(inputs / "targets.db", *_targets(states, districts))


def run_variant(args: argparse.Namespace) -> None:
    """One build in this (fresh) process; results and the matrix go to --out."""
    t0 = time.perf_counter()
    if args.simulator == "policyengine":
        import policyengine_us  # noqa: F401 - the import every variant pays, timed apart
    import_s = time.perf_counter() - t0
    from policyengine_us_data.dispatch import LocalChunkDispatcher
    from policyengine_us_data.dispatch.chunked_matrix_assembler import ChunkedMatrixAssembler
    from policyengine_us_data.datasets.geography import CloneGeography
    from policyengine_us_data.compat.unified_matrix_builder import UnifiedMatrixBuilder

    inputs, out = Path(args.inputs), Path(args.out)
    simulator = TOY if args.simulator == "toy" else "policyengine"
    builder = UnifiedMatrixBuilder(inputs / "targets.db", YEAR, inputs / "dataset.h5", work_dir=out / "work",
                                   simulator=simulator)
    state_dir = builder.prepare_state(CloneGeography.load(inputs / "geography.npz"))
    dispatcher = LocalChunkDispatcher(workers=args.workers, warm_up=not args.no_warm_up)
    assembler = ChunkedMatrixAssembler(state_dir, out / "chunks", chunk_size=args.chunk_size, dispatcher=dispatcher,
                                       resume=False, progress=False)
    t1 = time.perf_counter()
    matrix = assembler.build()
    build_s = time.perf_counter() - t1
    np.savez(out / "matrix.npz", data=matrix.data, indices=matrix.indices, indptr=matrix.indptr,
             shape=np.array(matrix.shape))
    result = {
        "workers": args.workers, "import_s": import_s, "build_s": build_s, "rows": assembler.n_rows,
        "shape": list(matrix.shape), "nnz": int(matrix.nnz),
        "peak_rss_parent_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_workers_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))


def _same(a: Path, b: Path) -> bool:
    left, right = np.load(a), np.load(b)
    return all(left[k].dtype == right[k].dtype and left[k].tobytes() == right[k].tobytes()
               for k in ("data", "indices", "indptr", "shape"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--households", type=int, default=2000)
    parser.add_argument("--clones", type=int, default=8)
    parser.add_argument("--chunk-size", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--simulator", choices=("policyengine", "toy"), default="policyengine")
    parser.add_argument("--no-warm-up", action="store_true", help="fork the pool without a warm-up simulation")
    parser.add_argument("--dir", default=str(ROOT / "benchmarks" / "out" / "dispatch"))
    parser.add_argument("--mode", choices=("compare", "run"), default="compare", help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode == "run":
        return run_variant(args)

    base = Path(args.dir)
    prepare(base / "inputs", args.households, args.clones)
    n_chunks = -(-args.households * args.clones // args.chunk_size)
    print(f"{args.households} households x {args.clones} clones, chunk size {args.chunk_size}: {n_chunks} chunks, "
          f"simulator {args.simulator}, cpu count {os.cpu_count()}")
    results = {}
    for workers in (1, args.workers):
        out = base / f"workers_{workers}"
        out.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, __file__, "--mode", "run", "--workers", str(workers), "--inputs", str(base / "inputs"),
               "--out", str(out), "--chunk-size", str(args.chunk_size), "--simulator", args.simulator]
        subprocess.run(cmd + (["--no-warm-up"] if args.no_warm_up else []), check=True, cwd=ROOT)
        results[workers] = json.loads((out / "result.json").read_text())
    serial, pool = results[1], results[args.workers]
    identical = _same(base / "workers_1" / "matrix.npz", base / f"workers_{args.workers}" / "matrix.npz")
    speedup = serial["build_s"] / pool["build_s"]
    print(f"{'workers':>8} {'import s':>9} {'build s':>9} {'parent MB':>10} {'workers MB':>11}")
    for workers, r in results.items():
        print(f"{workers:>8} {r['import_s']:9.1f} {r['build_s']:9.1f} {r['peak_rss_parent_mb']:10.0f} "
              f"{r['peak_rss_workers_mb']:11.0f}")
    print(f"speedup (build): {speedup:.2f}x; matrices identical: {'yes' if identical else 'NO'} "
          f"(shape {serial['shape']}, nnz {serial['nnz']})")
    summary = {"args": vars(args), "results": results, "speedup": speedup, "identical": identical}
    (base / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if not identical:
        raise SystemExit("the matrices differ")


if __name__ == "__main__":
    main()
