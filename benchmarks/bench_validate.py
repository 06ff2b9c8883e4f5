"""Dataset validation at scale: the streamed value check vs loading the dataset, side by side.

Writes a synthetic dataset of ``--households`` households (PolicyEngine h5 layout) unless ``--dataset`` names one,
then runs, each in a fresh process so peak memory is its own: ``check_dataset`` (what the `dataset` step's
validation does: metadata first, then every value in slices of ``SLICE_ROWS``) and ``read_dataset`` (the same check,
then every array loaded, as the step's build does). Prints wall time, peak RSS above the process's RSS after
imports, the file size and the ratios. A third run checks a small file declaring a 10^9-element variable.

    .venv/bin/python benchmarks/bench_validate.py [--households 1000000] [--dataset PATH] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = """
import json, sys, time
from policyengine_us_data.datasets.h5io import check_dataset, read_dataset
from policyengine_us_data.errors import DatasetError

def hwm_kb():  # this process's RSS high-water mark (ru_maxrss would carry the parent's across exec)
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

base = hwm_kb()
start = time.perf_counter()
outcome = "ok"
try:
    {call}(sys.argv[1])
except DatasetError as exc:
    outcome = "refused: " + str(exc)[-160:]
seconds = time.perf_counter() - start
print(json.dumps({{"seconds": seconds, "peak_mb": (hwm_kb() - base) / 1024, "outcome": outcome}}))
"""


def measure(call: str, path: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD.format(call=call), str(path)], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_synthetic(path: Path, households: int) -> float:
    from policyengine_us_data.datasets.h5io import write_dataset
    from policyengine_us_data.datasets.synthetic import generate_synthetic

    start = time.perf_counter()
    write_dataset(path, generate_synthetic(households, seed=1))
    return time.perf_counter() - start


def write_huge_declared(path: Path) -> None:
    """A valid small dataset whose `age` declares 10^9 float64 values and stores none."""
    import h5py

    write_synthetic(path, 100)
    with h5py.File(path, "a") as handle:
        del handle["age"]
        handle.create_group("age").create_dataset("2024", shape=(10**9,), dtype="f8", chunks=(1 << 20,),
                                                  compression="gzip")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--households", type=int, default=1_000_000)
    parser.add_argument("--dataset", type=Path, default=None, help="an existing h5 instead of a synthetic one")
    parser.add_argument("--dir", default=None, help="where to write the synthetic files (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = args.dataset
        if path is None:
            path = Path(tmp) / "synthetic.h5"
            print(f"writing {args.households:,} synthetic households: {write_synthetic(path, args.households):.1f} s")
        size_mb = path.stat().st_size / 2**20
        check = measure("check_dataset", path)
        read = measure("read_dataset", path)
        print(f"dataset {path.name}: {size_mb:,.0f} MB")
        print(f"{'approach':<40} {'wall s':>8} {'peak MB':>9}  outcome")
        for name, row in (("check_dataset (streamed validation)", check), ("read_dataset (validate + load)", read)):
            print(f"{name:<40} {row['seconds']:>8.2f} {row['peak_mb']:>9.0f}  {row['outcome']}")
        print(f"streamed check / full load: wall {check['seconds'] / read['seconds']:.2f}x, "
              f"peak memory {check['peak_mb'] / max(read['peak_mb'], 1):.3f}x; "
              f"check peak / file size {check['peak_mb'] / size_mb:.3f}x")
        huge = Path(tmp) / "huge.h5"
        write_huge_declared(huge)
        row = measure("check_dataset", huge)
        print(f"{huge.stat().st_size / 1024:.0f} KB file declaring 10^9 ages: {row['seconds']:.2f} s, "
              f"peak {row['peak_mb']:.0f} MB, {row['outcome'][:90]}...")


if __name__ == "__main__":
    main()
