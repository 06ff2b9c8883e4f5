"""Run-directory checkpoints: the runner's hard links vs a full copy vs git (LSST ci_builder's way).

Builds a run directory of about ``--size-mb`` MB in ``--files`` files (incompressible, like float shards, plus a
few small json files), then for each method: snapshot (hard links plus an xxh3 of each file's content); change the directory (a quarter of the files removed, a
tenth rewritten via temp + rename, a few added); restore; check the restored directory equals the original.
Prints times, per-file milliseconds, extra disk used (unique inodes, so hard links count once) and the ratios.
Files are in the page cache throughout and nothing is fsynced, for every method alike.

    .venv/bin/python benchmarks/bench_checkpoints.py [--size-mb 1024] [--files 300] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runner.checkpoints import CheckpointStore  # noqa: E402

GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", "-c", "commit.gpgsign=false"]


def build_run_dir(run_dir: Path, size_mb: int, files: int) -> None:
    """``files`` shards of incompressible data totalling ``size_mb`` MB, and 20 small json files."""
    run_dir.mkdir(parents=True)
    (run_dir / "shards").mkdir()
    (run_dir / "meta").mkdir()
    per_file = size_mb * 2**20 // files
    block = os.urandom(per_file)
    for index in range(files):
        header = index.to_bytes(8, "little") * 512  # distinct files, so nothing deduplicates
        (run_dir / "shards" / f"shard_{index:04d}.bin").write_bytes(header + block[len(header):])
    for index in range(20):
        (run_dir / "meta" / f"chunk_{index:03d}.json").write_text(f'{{"chunk": {index}}}\n')


def fingerprint(run_dir: Path) -> dict[str, str]:
    """Relative path -> size and hash of the first 64 KB, for every file outside the methods' own folders."""
    out = {}
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir).as_posix()
        if path.is_file() and not rel.startswith((".runner", ".git")):
            with open(path, "rb") as handle:
                out[rel] = f"{path.stat().st_size}:{hashlib.sha256(handle.read(65536)).hexdigest()[:12]}"
    return out


def disk_bytes(*roots: Path) -> int:
    """Bytes allocated under ``roots``, each inode counted once (hard links share their blocks)."""
    seen, total = set(), 0
    for root in roots:
        if not root.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                st = os.lstat(os.path.join(dirpath, name))
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
    return total


def change(run_dir: Path) -> None:
    """What later steps and a failed attempt do: remove some files, rewrite some (temp + rename), add some."""
    shards = sorted((run_dir / "shards").iterdir())
    for index, path in enumerate(shards):
        if index % 4 == 0:
            path.unlink()
        elif index % 10 == 1:
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(os.urandom(path.stat().st_size))
            os.replace(tmp, path)
    for index in range(5):
        (run_dir / "shards" / f"extra_{index}.bin").write_bytes(os.urandom(2**20))


def timed(func) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def _no_aside(rel: str) -> Path:
    raise AssertionError(f"every file here is the runner's; nothing to move aside ({rel})")


def bench_runner(run_dir: Path, root: Path) -> dict:
    store = CheckpointStore(run_dir)
    before = disk_bytes(root)
    holder = {}
    snap = timed(lambda: holder.setdefault("m", store.snapshot("bench", {})))
    extra = disk_bytes(root) - before
    change(run_dir)
    restore = timed(lambda: store.restore(holder["m"], owns=lambda rel, st: True, aside=_no_aside))
    result = {"snapshot": snap, "restore": restore, "extra": extra, "copies": holder["m"].copies}
    shutil.rmtree(run_dir / ".runner")
    return result


def bench_copy(run_dir: Path, root: Path) -> dict:
    copy_dir = root / "copy"
    before = disk_bytes(root)
    snap = timed(lambda: shutil.copytree(run_dir, copy_dir, symlinks=True))
    extra = disk_bytes(root) - before
    change(run_dir)

    def restore() -> None:
        shutil.rmtree(run_dir)
        shutil.copytree(copy_dir, run_dir, symlinks=True)

    result = {"snapshot": snap, "restore": timed(restore), "extra": extra}
    shutil.rmtree(copy_dir)
    return result


def bench_git(run_dir: Path, root: Path) -> dict:
    def git(*args: str) -> None:
        subprocess.run([*GIT, *args], cwd=run_dir, check=True, stdout=subprocess.DEVNULL)

    before = disk_bytes(root)
    snap = timed(lambda: (git("init", "-q"), git("add", "-A"), git("commit", "-q", "-m", "bench"),
                          git("tag", "bench")))
    extra = disk_bytes(root) - before
    change(run_dir)
    restore = timed(lambda: (git("reset", "-q", "--hard", "bench"), git("clean", "-q", "-fd")))
    result = {"snapshot": snap, "restore": restore, "extra": extra}
    shutil.rmtree(run_dir / ".git")
    return result


def report(results: dict[str, dict], n_files: int, size: int) -> None:
    print(f"run directory: {n_files} files, {size / 2**20:,.0f} MB (page cache warm, nothing fsynced)")
    print(f"{'method':<26}{'snapshot':>11}{'per file':>12}{'restore':>11}{'extra disk':>13}")
    for name, r in results.items():
        print(f"{name:<26}{r['snapshot']:>10.3f}s{r['snapshot'] / n_files * 1e3:>9.3f} ms"
              f"{r['restore']:>10.3f}s{r['extra'] / 2**20:>10.1f} MB")
    ours = results["runner (hard links)"]
    for name in ("git add+commit+tag", "full copy (copytree)"):
        r = results[name]
        print(f"{name} / runner: snapshot {r['snapshot'] / ours['snapshot']:,.0f}x, "
              f"restore {r['restore'] / ours['restore']:,.1f}x")
    print(f"runner: files copied instead of linked: {ours['copies']}; "
          f"goal snapshot >= 100x faster than git: {results['git add+commit+tag']['snapshot'] >= 100 * ours['snapshot']}; "
          f"goal < 1 ms per file: {ours['snapshot'] / n_files < 1e-3}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--dir", default=None, help="where to build the run directory (default: system temp)")
    parser.add_argument("--skip-git", action="store_true", help="leave out git (slow: about a minute per GB)")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench-checkpoints-", dir=args.dir))
    run_dir = root / "run"
    try:
        build_run_dir(run_dir, args.size_mb, args.files)
        original = fingerprint(run_dir)
        methods = {"runner (hard links)": bench_runner, "full copy (copytree)": bench_copy}
        if not args.skip_git:
            methods["git add+commit+tag"] = bench_git
        results = {}
        for name, bench in methods.items():
            results[name] = bench(run_dir, root)
            assert fingerprint(run_dir) == original, f"{name}: restore did not give back the original files"
        if args.skip_git:
            results["git add+commit+tag"] = {"snapshot": float("nan"), "restore": float("nan"), "extra": 0}
        report(results, len(original), sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file()))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
