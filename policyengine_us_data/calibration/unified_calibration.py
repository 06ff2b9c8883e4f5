"""`python -m policyengine_us_data.calibration.unified_calibration`: upstream's matrix-building CLI.

Builds the calibration matrix (fitting weights is downstream's job, so `--build-only` is the only
mode and is accepted for compatibility). `--chunked-matrix` takes the chunked path; `--parallel`
then fans the chunks out over Modal, and without `--chunked-matrix` it is a silent no-op.
`--workers N` runs chunks in a local process pool instead. `--plan` prints a production plan from
the per-chunk measurements of a chunk directory.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from policyengine_us_data.calibration.chunked_matrix_assembler import ChunkBuildError
from policyengine_us_data.errors import ArtifactError, InputError

LOG = logging.getLogger(__name__)
DEFAULT_N_CLONES = 430
DEFAULT_CHUNK_SIZE = 25_000


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unified_calibration", description=__doc__.splitlines()[0])
    inputs = parser.add_argument_group("inputs")
    inputs.add_argument("--dataset", default=None, help="PolicyEngine h5 dataset (default: embedded synthetic)")
    inputs.add_argument("--db", default=None, help="target database (default: the embedded one)")
    inputs.add_argument("--year", type=int, default=2024)
    inputs.add_argument("--n-clones", type=int, default=DEFAULT_N_CLONES)
    inputs.add_argument("--seed", type=int, default=0)
    inputs.add_argument("--skip-takeup-rerandomize", action="store_true")
    build = parser.add_argument_group("matrix build")
    build.add_argument("--output-dir", default="unified-calibration-output")
    build.add_argument("--chunked-matrix", action=argparse.BooleanOptionalAction, default=False,
                       help="build in column chunks")
    build.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    build.add_argument("--parallel", action=argparse.BooleanOptionalAction, default=False,
                       help="fan chunks out over Modal (only with --chunked-matrix)")
    build.add_argument("--num-matrix-workers", type=int, default=50)
    build.add_argument("--workers", type=int, default=1, help="local worker processes for chunks")
    build.add_argument("--run-id", default="", help="Modal run id; the same id resumes")
    build.add_argument("--resume-chunks", action="store_true", help="reuse verified shards of this lineage")
    build.add_argument("--keep-chunks", action="store_true")
    build.add_argument("--chunk-dir", default=None)
    build.add_argument("--build-only", action="store_true", help="build the matrix only (the only mode here)")
    build.add_argument("--package-output", default=None, help="write upstream's calibration_package.pkl here")
    build.add_argument("--plan", action="store_true",
                       help="print a production plan from the chunk measurements in --chunk-dir and exit")
    return parser


def choose_dispatcher(args: argparse.Namespace):
    """Modal when --parallel with --chunked-matrix; otherwise a local (serial or pooled) dispatcher.

    On Modal the shards live where the workers write them, `/staging/{run_id}/matrix_chunks/`, so
    that becomes the chunk directory unless one was given.
    """
    from policyengine_us_data.calibration.chunk_dispatch import (
        LocalChunkDispatcher,
        ModalChunkDispatcher,
        new_run_id,
        staging_root,
    )
    from policyengine_us_data.calibration.chunk_dispatch.worker import chunk_dir

    if args.chunked_matrix and args.parallel:
        args.run_id = args.run_id or new_run_id()
        args.chunk_dir = args.chunk_dir or str(chunk_dir(staging_root(), args.run_id))
        return ModalChunkDispatcher(num_workers=args.num_matrix_workers, run_id=args.run_id,
                                    volume_root=str(staging_root()))
    return LocalChunkDispatcher(workers=args.workers)


def print_plan(args: argparse.Namespace) -> int:
    from policyengine_us_data.calibration.chunk_dispatch.plan import format_plan, plan_production
    from policyengine_us_data.calibration.lineage import ChunkManifest

    if not args.chunk_dir:
        raise InputError("--plan needs --chunk-dir pointing at a build's chunks (run one with --keep-chunks)")
    manifest = ChunkManifest.load(Path(args.chunk_dir) / "chunk_manifest.json")
    records = list(manifest.chunks.values())
    if not records:
        raise InputError(f"no finished chunks recorded in {args.chunk_dir}: build some first")
    columns = sum(r.col_end - r.col_start for r in records)
    seconds_per_column = sum(r.seconds for r in records) / columns
    per_chunk = seconds_per_column * args.chunk_size
    n_chunks = -(-(manifest.lineage["n_records"] * args.n_clones) // args.chunk_size)
    rss_gb = _peak_rss_gb(Path(args.chunk_dir))
    plan = plan_production(per_chunk, rss_gb, n_chunks=n_chunks, workers=args.num_matrix_workers)
    print(f"measured: {len(records)} chunks, {columns} columns, {seconds_per_column * 1000:.2f} ms per column "
          f"(scaled linearly to {args.chunk_size} columns: an upper bound, the fixed cost is paid once per chunk)")
    print(format_plan(plan))
    return 0


def _peak_rss_gb(chunk_dir: Path) -> float:
    """Worker peak RSS from the dispatch summary when present; else the measured 3.1 GB per 25k chunk."""
    import json

    summary = chunk_dir / "dispatch.json"
    if summary.exists():
        results = json.loads(summary.read_text()).get("results", [])
        peaks = [r.get("peak_rss_mb", 0) for r in results]
        if peaks and max(peaks) > 0:
            return max(peaks) / 1024
    return 3.1


def remove_chunks(chunk_dir: Path) -> None:
    """Drop this build's shards and manifest once the matrix is written (nothing else there)."""
    for path in chunk_dir.glob("chunk_*.npz"):
        path.unlink()
    manifest = chunk_dir / "chunk_manifest.json"
    if manifest.exists():
        manifest.unlink()


def run(args: argparse.Namespace) -> int:
    """Build the matrix and write its outputs; returns an exit code."""
    from policyengine_us_data.calibration.matrix_job import MatrixJob

    if args.plan:
        return print_plan(args)
    job = MatrixJob.from_args(args)
    if args.chunked_matrix:
        dispatcher = choose_dispatcher(args)
        chunk_dir = Path(args.chunk_dir) if args.chunk_dir else job.builder.work_dir / "matrix_chunks"
        targets_df, matrix, names = job.builder.build_matrix_chunked(
            job.geography, target_filter=None, chunk_size=args.chunk_size, chunk_dir=str(chunk_dir),
            keep_chunks=True, resume_chunks=args.resume_chunks,
            rerandomize_takeup=not args.skip_takeup_rerandomize, dispatcher=dispatcher, progress=True,
        )
        job.write_outputs(matrix, package_output=args.package_output, chunk_dir=chunk_dir)
        if not args.keep_chunks:
            remove_chunks(chunk_dir)
    else:
        targets_df, matrix, names = job.builder.build_matrix(
            job.geography, rerandomize_takeup=not args.skip_takeup_rerandomize
        )
        job.write_outputs(matrix, package_output=args.package_output)
    print(f"matrix {matrix.shape[0]} x {matrix.shape[1]}, {matrix.nnz} non-zeros: {job.output_dir / 'X.npz'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ArtifactError as exc:
        print(f"error: damaged file: {exc}", file=sys.stderr)
        return 1
    except ChunkBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
