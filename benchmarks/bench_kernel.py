"""One chunk's time, split into materialise, simulate, emit and write, at several chunk sizes.

Runs the real kernel (policyengine-us) in this process on the embedded default data and
targets: 1,000 households x enough clones for the largest chunk. The first chunk pays the
process's one-off warm-up, which is reported on its own line and not counted. Prints seconds
per stage and households per second. At the sizes given by --compare-at it also runs the same
chunk the way upstream's builder simulates (policyengine-us's Microsimulation, its own pinned-system
cache and formulas, a reformed system built for the chunk), side by side, and prints the ratio.

    .venv/bin/python benchmarks/bench_kernel.py --sizes 1000 5000 25000 --compare-at 1000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policyengine_us_data.kernel import pe_speedups  # noqa: E402
from policyengine_us_data.kernel.build_state import write_build_state  # noqa: E402
from policyengine_us_data.kernel.chunk_kernel import peak_rss_mb, run_chunk  # noqa: E402
from policyengine_us_data.shards.chunk_plan import ChunkPlan  # noqa: E402
from policyengine_us_data.pipeline.default_targets import default_targets_path  # noqa: E402
from policyengine_us_data.datasets.geography import assign_geography  # noqa: E402
from policyengine_us_data.kernel.simulator import get_simulator  # noqa: E402
from policyengine_us_data.targets.targets import load_targets  # noqa: E402
from policyengine_us_data.datasets.synthetic import generate_synthetic  # noqa: E402

STAGES = ("materialise", "simulate", "emit", "write")


def make_state(root: Path, n_columns: int) -> Path:
    """The embedded households with enough clones for `n_columns`, and every default target."""
    return state_with_clones(root, -(-n_columns // generate_synthetic().n_households))


def state_with_clones(root: Path, clones: int, households: int | None = None) -> Path:
    """Build state for the embedded households (or `households` synthetic ones) x `clones` and every default
    target, uprated as a build does."""
    data = generate_synthetic() if households is None else generate_synthetic(households)
    simulator = get_simulator("policyengine")
    table = load_targets(default_targets_path(), 2024, known_variables=simulator.known_variables(),
                         uprating=simulator.uprating())
    state = root / "state"
    write_build_state(state, data=data, geography=assign_geography(data.n_households, clones, seed=1),
                      targets=table, year=2024, rerandomize_takeup=True)
    return state


def time_chunk(state: Path, root: Path, size: int, chunk_id: int) -> dict:
    plan = ChunkPlan(chunk_id, 0, size, str(root / f"chunk_{chunk_id:06d}.npz"), "bench")
    start = time.perf_counter()
    result = run_chunk(plan, str(state))
    return {"size": size, "wall": time.perf_counter() - start, **result.timings, "nnz": result.nnz,
            "households": result.households, "rss": peak_rss_mb()}


def upstream_way(run):
    """Run with Microsimulation, policyengine-us's own pinned-system cache and formulas, and reform rows on
    policyengine-core's reform (a whole parameter-tree copy per reform, as `Microsimulation(reform=...)` makes
    for each chunk); all restored after."""
    from policyengine_us import Microsimulation

    simulator = get_simulator("policyengine")
    plain, reformed = simulator._simulation, simulator._reformed
    pe_speedups.uninstall()
    simulator._simulation, simulator._reformed = Microsimulation, {}
    try:
        return run()
    finally:
        simulator._simulation, simulator._reformed = plain, reformed
        pe_speedups.install()


def print_row(label: str, row: dict) -> None:
    stages = "  ".join(f"{row.get(s, 0):8.2f}" for s in STAGES)
    rate = row["households"] / row["wall"]
    print(f"{label:<22}{row['size']:>7}  {stages}  {row['wall']:8.2f}  {rate:9.0f}  {row['nnz']:>9}  {row['rss']:7.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 25000])
    parser.add_argument("--compare-at", type=int, nargs="*", default=[],
                        help="sizes at which to also time the upstream way (Microsimulation, no cache)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-kernel-") as tmp:
        root = Path(tmp)
        state = make_state(root, max(args.sizes))
        warm = time_chunk(state, root, 10, 999)
        print(f"one-off warm-up of this process (10 columns): {warm['wall']:.1f} s\n")
        header = "  ".join(f"{s:>8}" for s in STAGES)
        print(f"{'run':<22}{'cols':>7}  {header}  {'total s':>8}  {'hh/s':>9}  {'nnz':>9}  {'peakMB':>7}")
        for i, size in enumerate(args.sizes):
            patched = time_chunk(state, root, size, i)
            print_row("kernel", patched)
            if size in args.compare_at:
                upstream = upstream_way(lambda: time_chunk(state, root, size, 100 + i))
                print_row("upstream way", upstream)
                print(f"{'':<22}kernel speedup over the upstream way: {upstream['wall'] / patched['wall']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
