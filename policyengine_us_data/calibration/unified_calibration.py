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

from policyengine_us_data.calibration.chunk_plan import DEFAULT_PLAN_KIND, PLAN_KINDS
from policyengine_us_data.calibration.chunked_matrix_assembler import ChunkBuildError
from policyengine_us_data.calibration.upstream_chunk_cache import COO_DIR
from policyengine_us_data.errors import ArtifactError, InputError
from policyengine_us_data.utils.cli_process import configure_logging, exit_now, version_line
from policyengine_us_data.utils.paths import check_input_file, check_output_dir, check_output_file

LOG = logging.getLogger(__name__)
DEFAULT_N_CLONES = 430
DEFAULT_CHUNK_SIZE = 25_000
HELP_EPILOG = f"""\
The defaults are upstream's production shape ({DEFAULT_N_CLONES} clones, {DEFAULT_CHUNK_SIZE:,}-column chunks): a chunk
then needs about 13 GB, more than a laptop has. On a laptop pass a small shape, for example:
  python -m policyengine_us_data.calibration.unified_calibration --chunked-matrix --n-clones 3 --chunk-size 1000

exit codes:
  0 done   1 a chunk or a stored file failed   2 bad input   130 interrupted (Ctrl-C)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unified_calibration", description=__doc__.splitlines()[0],
                                     epilog=HELP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=version_line("unified_calibration"))
    parser.add_argument("-q", "--quiet", action="count", default=0, help="warnings only")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="debug messages, and third-party libraries' messages")
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
    build.add_argument("--chunk-plan", choices=PLAN_KINDS, default=DEFAULT_PLAN_KIND,
                       help="'state': each chunk's columns share a state (or a few small states), several times "
                            "cheaper to simulate; 'contiguous': upstream's column ranges; same matrix "
                            "(default %(default)s)")
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
    chunks = manifest_dir(Path(args.chunk_dir))
    manifest = ChunkManifest.load(chunks / "chunk_manifest.json")
    records = list(manifest.chunks.values())
    if not records:
        raise InputError(f"no finished chunks recorded in {args.chunk_dir}: build some first")
    columns = sum(r.col_end - r.col_start for r in records)
    seconds_per_column = sum(r.seconds for r in records) / columns
    kind = str(manifest.lineage.get("chunk_plan", "contiguous"))
    n_columns = manifest.lineage["n_records"] * args.n_clones
    n_chunks = planned_chunks(kind, manifest.lineage["n_records"], args.n_clones, args.chunk_size)
    per_chunk = seconds_per_column * n_columns / n_chunks
    rss_gb = _peak_rss_gb(chunks)
    plan = plan_production(per_chunk, rss_gb, n_chunks=n_chunks, workers=args.num_matrix_workers)
    print(f"measured: {len(records)} chunks ({kind} plan), {columns} columns, {seconds_per_column * 1000:.2f} ms per "
          f"column (scaled linearly to {n_columns / n_chunks:.0f} columns per chunk: an upper bound, the fixed cost "
          "is paid once per chunk)")
    print(format_plan(plan))
    return 0


def planned_chunks(kind: str, n_records: int, n_clones: int, chunk_size: int) -> int:
    """How many chunks the plan kind makes of n_records x n_clones columns (state: on a fresh geography)."""
    from policyengine_us_data.calibration.chunk_plan import partition_plan
    from policyengine_us_data.calibration.geography import assign_geography

    if kind == "contiguous":
        return -(-(n_records * n_clones) // chunk_size)
    return len(partition_plan(kind, assign_geography(n_records, n_clones, seed=0).state_fips, chunk_size))


UNMEASURED_PEAK_GB = 12.7  # the README's measured peak of a contiguous 25,000-column chunk


def _peak_rss_gb(chunk_dir: Path) -> float:
    """Worker peak RSS from the dispatch summary `bin/build-matrix` writes; without one, say so and use the
    README's measured 12.7 GB for a contiguous 25,000-column chunk (an upper bound for state-major chunks)."""
    import json

    summary = chunk_dir / "dispatch.json"
    if summary.exists():
        results = json.loads(summary.read_text()).get("results", [])
        peaks = [r.get("peak_rss_mb", 0) for r in results]
        if peaks and max(peaks) > 0:
            return max(peaks) / 1024
    print(f"peak memory: not recorded in {chunk_dir} (no dispatch.json); using the measured "
          f"{UNMEASURED_PEAK_GB} GB of a contiguous 25,000-column chunk")
    return UNMEASURED_PEAK_GB


def check_paths(args: argparse.Namespace) -> None:
    """Every path flag is of the right kind before anything is built; no parent directory is created for
    --package-output."""
    for flag, value in (("--dataset", args.dataset), ("--db", args.db)):
        if value:
            check_input_file(value, flag)
    for flag, value in (("--output-dir", args.output_dir), ("--chunk-dir", args.chunk_dir)):
        if value:
            check_output_dir(value, flag)
    if args.package_output:
        check_output_file(args.package_output, "--package-output")


def shard_dir(args: argparse.Namespace, work_dir: Path) -> Path:
    """Where this build's shards and manifest go: a Modal run's staging directory as is; a local
    `--chunk-dir X` as upstream's `X/coo/`; otherwise the work directory."""
    if args.chunked_matrix and args.parallel:
        return Path(args.chunk_dir)
    return Path(args.chunk_dir) / COO_DIR if args.chunk_dir else work_dir / "matrix_chunks"


def manifest_dir(chunk_dir: Path) -> Path:
    """The directory holding a build's `chunk_manifest.json` (`X/coo/` for a local build, `X` on Modal)."""
    return chunk_dir / COO_DIR if (chunk_dir / COO_DIR / "chunk_manifest.json").exists() else chunk_dir


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
    check_paths(args)
    job = MatrixJob.from_args(args)
    if args.chunked_matrix:
        dispatcher = choose_dispatcher(args)
        chunk_dir = shard_dir(args, job.builder.work_dir)
        where = {"shard_dir": args.chunk_dir} if args.parallel else {"chunk_dir": args.chunk_dir}
        targets_df, matrix, names = job.builder.build_matrix_chunked(
            job.geography, target_filter=None, chunk_size=args.chunk_size, chunk_plan=args.chunk_plan, **where,
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
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose - args.quiet)
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
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C); finished chunks are kept when --keep-chunks or --chunk-dir is given",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    exit_now(main())
