"""Final-assembly benchmark: upstream's list-then-concatenate vs our streaming and out-of-core CSR.

Generates synthetic shards (default: 40 shards x 25,000 columns, ~40 non-zeros per column,
3,842 rows; `--production`: 207 shards), then runs each assembly in a fresh process (this
script with `--mode`), so one method's heap never inflates another's figure.

Peak memory is VmHWM (the kernel's exact high-water mark of the process RSS, including file
pages mapped by the out-of-core variant; not ru_maxrss, which inherits the parent's RSS) minus
the RSS measured just before assembly starts (after imports): what the assembly itself added. Shards are in the page
cache (just written or read by the previous run); page cache is not RSS.

    .venv/bin/python benchmarks/bench_assembly.py [--production] [--shards N] [--cols-per-shard N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from policyengine_us_data.shards import csr_stream  # noqa: E402
from policyengine_us_data.shards import shards  # noqa: E402

N_ROWS = 3842
N_STATES, STATE_VARS, N_DISTRICTS, DISTRICT_VARS = 51, 20, 436, 6
MODES = ("baseline", "stream", "out_of_core")


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _max_rss_mb() -> float:
    """VmHWM: the kernel's exact RSS high-water mark of this process image.

    Not ru_maxrss: Linux carries the forked parent's RSS into the child's ru_maxrss across
    execve, so a child of a big parent would report the parent's size.
    """
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Sampler:
    """Samples RssAnon and RssFile every 2 ms (a diagnostic split of the peak; VmHWM is the figure)."""

    def __init__(self) -> None:
        import threading

        self.peak = {"RssAnon": 0.0, "RssFile": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            with open("/proc/self/status") as handle:
                for line in handle:
                    key = line.split(":")[0]
                    if key in self.peak:
                        self.peak[key] = max(self.peak[key], int(line.split()[1]) / 1024)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return self.peak


def synthetic_shard(chunk_id: int, cols_per_shard: int, nnz_per_col: float, n_rows: int, seed: int):
    """One chunk's entries with target-like rows: national rows hit by many columns, a
    column's own state and district rows, a few dense rows; ~nnz_per_col per column."""
    rng = np.random.default_rng([seed, chunk_id])
    n_state_rows, n_district_rows = N_STATES * STATE_VARS, N_DISTRICTS * DISTRICT_VARS
    n_national = n_rows - n_state_rows - n_district_rows
    start = chunk_id * cols_per_shard
    cols = np.arange(start, start + cols_per_shard)
    district = rng.integers(0, N_DISTRICTS, cols.size)
    state = district % N_STATES
    p_state = 0.6
    p_national = max(0.0, nnz_per_col - DISTRICT_VARS - STATE_VARS * p_state) / n_national
    pieces = []
    nat_c, nat_r = np.nonzero(rng.random((cols.size, n_national)) < p_national)
    pieces.append((nat_r, nat_c))
    st_c, st_v = np.nonzero(rng.random((cols.size, STATE_VARS)) < p_state)
    pieces.append((n_national + state[st_c] * STATE_VARS + st_v, st_c))
    di_c = np.repeat(np.arange(cols.size), DISTRICT_VARS)
    di_v = np.tile(np.arange(DISTRICT_VARS), cols.size)
    pieces.append((n_national + n_state_rows + district[di_c] * DISTRICT_VARS + di_v, di_c))
    rows = np.concatenate([p[0] for p in pieces])
    local = np.concatenate([p[1] for p in pieces])
    vals = rng.lognormal(8.0, 1.5, rows.size)
    return rows, cols[local], vals


def generate(directory: Path, n_shards: int, cols_per_shard: int, nnz_per_col: float, seed: int) -> list[Path]:
    params = {"n_shards": n_shards, "cols_per_shard": cols_per_shard, "nnz_per_col": nnz_per_col,
              "n_rows": N_ROWS, "seed": seed, "format": shards.FORMAT_VERSION}  # fmt: skip
    marker = directory / "params.json"
    paths = [shards.shard_path(directory, i) for i in range(n_shards)]
    if marker.exists() and json.loads(marker.read_text()) == params and all(p.exists() for p in paths):
        print(f"reusing {n_shards} shards in {directory}")
        return paths
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    n_cols = n_shards * cols_per_shard
    t0 = time.perf_counter()
    for i, path in enumerate(paths):
        rows, cols, vals = synthetic_shard(i, cols_per_shard, nnz_per_col, N_ROWS, seed)
        shards.write_shard(path, rows, cols, vals, chunk_id=i, col_start=i * cols_per_shard,
                           col_end=(i + 1) * cols_per_shard, n_rows=N_ROWS, n_cols=n_cols,
                           lineage_signature="bench")  # fmt: skip
    marker.write_text(json.dumps(params))
    print(f"generated {n_shards} shards in {time.perf_counter() - t0:.1f} s")
    return paths


def baseline(paths: list[Path], n_rows: int, n_cols: int):
    """Upstream before its fix: every shard into lists, concatenate, COO -> CSR."""
    import scipy.sparse as sp

    rows_list, cols_list, vals_list = [], [], []
    for path in paths:
        with np.load(path) as npz:
            rows_list.append(npz["rows"])
            cols_list.append(npz["cols"])
            vals_list.append(npz["vals"])
    rows, cols, vals = np.concatenate(rows_list), np.concatenate(cols_list), np.concatenate(vals_list)
    matrix = sp.coo_matrix((vals, (rows, cols)), shape=(n_rows, n_cols)).tocsr()
    matrix.sum_duplicates()
    return matrix


def run_mode(mode: str, directory: Path, n_rows: int, n_cols: int) -> dict:
    """Child process: one assembly, measured; prints one JSON line."""
    import xxhash

    paths = sorted(directory.glob("chunk_*.npz"))
    before = _rss_mb()
    sampler = _Sampler()
    t0 = time.perf_counter()
    if mode == "baseline":
        matrix = baseline(paths, n_rows, n_cols)
    elif mode == "stream":
        matrix = csr_stream.assemble_csr(paths, n_rows, n_cols)
    else:
        out = directory / "out_of_core"
        csr_stream.assemble_csr_out_of_core(paths, n_rows, n_cols, out)
    wall = time.perf_counter() - t0
    peak = _max_rss_mb() - before
    split = sampler.stop()
    if mode == "out_of_core":
        matrix = csr_stream.load_csr_parts(out)
    digest = xxhash.xxh3_64()
    for array in (matrix.data, matrix.indices, matrix.indptr):
        digest.update(array.dtype.str.encode())
        digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    csr_mb = sum(a.nbytes for a in (matrix.data, matrix.indices, matrix.indptr)) / 2**20
    return {"mode": mode, "wall": wall, "peak_mb": peak, "csr_mb": csr_mb, "nnz": int(matrix.nnz),
            "digest": digest.hexdigest(), "baseline_rss_mb": before, "sampled_peaks_mb": split}  # fmt: skip


def main() -> None:  # noqa: C901
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--production", action="store_true", help="207 shards (about 3.3 GB on disk, ~20 GB RAM)")
    parser.add_argument("--shards", type=int, default=None)
    parser.add_argument("--cols-per-shard", type=int, default=25_000)
    parser.add_argument("--nnz-per-col", type=float, default=40.0)
    parser.add_argument("--dir", type=Path, default=None, help="shard directory (default under /tmp)")
    parser.add_argument("--seed", type=int, default=20240)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--keep", action="store_true", help="keep the shards afterwards")
    parser.add_argument("--verbose", action="store_true", help="print each child's raw result")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    n_shards = args.shards or (207 if args.production else 40)
    directory = args.dir or Path(f"/tmp/bench_assembly_{n_shards}x{args.cols_per_shard}")
    n_cols = n_shards * args.cols_per_shard
    if args.mode:
        print(json.dumps(run_mode(args.mode, directory, N_ROWS, n_cols)))
        return
    generate(directory, n_shards, args.cols_per_shard, args.nnz_per_col, args.seed)
    results, verbose = [], args.verbose
    for mode in args.modes.split(","):
        cmd = [sys.executable, __file__, "--mode", mode, "--dir", str(directory), "--shards", str(n_shards),
               "--cols-per-shard", str(args.cols_per_shard)]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        if verbose:
            print(json.dumps(results[-1]))
    report(results, n_shards, n_cols)
    shutil.rmtree(directory / "out_of_core", ignore_errors=True)
    if not args.keep:
        shutil.rmtree(directory, ignore_errors=True)


def report(results: list[dict], n_shards: int, n_cols: int) -> None:
    base = next((r for r in results if r["mode"] == "baseline"), results[0])
    r0 = results[0]
    print(f"\n{n_shards} shards, {N_ROWS} x {n_cols:,} matrix, nnz {r0['nnz']:,}, final CSR {r0['csr_mb']:.1f} MB")
    print("peak = VmHWM - RSS before assembly (after imports), each mode in a fresh process\n")
    print(f"{'method':<14}{'peak MB':>10}{'peak / CSR':>12}{'wall s':>9}{'wall / baseline':>17}")
    for r in results:
        print(f"{r['mode']:<14}{r['peak_mb']:>10.1f}{r['peak_mb'] / r['csr_mb']:>11.3f}x{r['wall']:>9.2f}"
              f"{r['wall'] / base['wall']:>16.2f}x")  # fmt: skip
    same = len({(r["digest"], r["nnz"]) for r in results}) == 1
    print(f"\nidentical matrices (data, indices, indptr, dtypes): {'yes' if same else 'NO'}")
    if not same:
        raise SystemExit("assemblies differ")


if __name__ == "__main__":
    main()
