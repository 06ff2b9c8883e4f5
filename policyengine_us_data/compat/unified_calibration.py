"""`python -m policyengine_us_data.compat.unified_calibration`: upstream's matrix-building CLI.

Builds the calibration matrix (fitting weights is downstream's job, so `--build-only` is the only
mode and is accepted for compatibility). `--chunked-matrix` takes the chunked path; `--parallel`
then fans the chunks out over Modal, and without `--chunked-matrix` it is a silent no-op.
`--workers N` runs chunks in a local process pool instead. `--plan` prints the production plan from
a measurement manifest or a build's chunk directory (`production_plan`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from policyengine_us_data.shards.chunk_plan import DEFAULT_PLAN_KIND, PLAN_KINDS
from policyengine_us_data.dispatch.chunked_matrix_assembler import ChunkBuildError
from policyengine_us_data.pipeline.default_targets import default_targets_path
from policyengine_us_data.datasets.geography import CloneGeography, assign_geography
from policyengine_us_data.compat.unified_matrix_builder import UnifiedMatrixBuilder
from policyengine_us_data.compat.production_plan import PRODUCTION_HOUSEHOLDS, print_plan
from policyengine_us_data.datasets.h5io import read_dataset
from policyengine_us_data.errors import ArtifactError, InputError
from policyengine_us_data.pipeline.assemble import package_path, write_outputs
from policyengine_us_data.pipeline.dataset import prepare_dataset
from policyengine_us_data.utils.cli_process import configure_logging, exit_now, version_line
from policyengine_us_data.utils.paths import check_input_file, check_output_dir

LOG = logging.getLogger(__name__)
DEFAULT_N_CLONES = 430
DEFAULT_CHUNK_SIZE = 25_000
HELP_EPILOG = f"""\
The defaults are upstream's production shape ({DEFAULT_N_CLONES} clones, {DEFAULT_CHUNK_SIZE:,}-column chunks): a chunk
then needs about 13 GB, more than a laptop has. On a laptop pass a small shape, for example:
  python -m policyengine_us_data.compat.unified_calibration --chunked-matrix --n-clones 3 --chunk-size 1000

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
    plan = parser.add_argument_group("production plan (--plan)")
    plan.add_argument("--plan", action="store_true",
                      help="print the production plan (--plan-households x --n-clones in --chunk-size chunks on "
                           "--num-matrix-workers) from --measured FILE or the chunks in --chunk-dir, and exit")
    plan.add_argument("--measured", default=None,
                      help="measurement manifest written by benchmarks/bench_chunk_plans.py --manifest FILE")
    plan.add_argument("--plan-households", type=int, default=PRODUCTION_HOUSEHOLDS)
    plan.add_argument("--cold-start-seconds", type=float, default=None,
                      help="Modal's container start, if you measured it (otherwise the plan says it is not)")
    return parser


def choose_dispatcher(args: argparse.Namespace):
    """Modal when --parallel with --chunked-matrix (its shards then live where the workers write them,
    `/staging/{run_id}/matrix_chunks/`: the dispatcher decides); otherwise a local (serial or pooled) dispatcher."""
    from policyengine_us_data.dispatch import LocalChunkDispatcher, ModalChunkDispatcher, staging_root

    if args.chunked_matrix and args.parallel:
        return ModalChunkDispatcher(num_workers=args.num_matrix_workers, run_id=args.run_id or None,
                                    volume_root=str(staging_root()))
    return LocalChunkDispatcher(workers=args.workers)


def check_paths(args: argparse.Namespace) -> None:
    """Every path flag is of the right kind before anything is built; no parent directory is created for
    --package-output."""
    for flag, value in (("--dataset", args.dataset), ("--db", args.db)):
        if value:
            check_input_file(value, flag)
    for flag, value in (("--output-dir", args.output_dir), ("--chunk-dir", args.chunk_dir)):
        if value:
            check_output_dir(value, flag)
    package_path(args.package_output, Path(args.output_dir))  # relative: inside --output-dir, as in bin/build-matrix


def make_builder(args: argparse.Namespace, output_dir: Path) -> tuple[UnifiedMatrixBuilder, CloneGeography]:
    """The builder over --dataset (or the embedded households, written to the output directory) and --db, and
    the clone geography, as `bin/build-matrix`'s dataset step makes it."""
    if args.n_clones <= 0:
        raise InputError(f"--n-clones must be a positive integer, got {args.n_clones}")
    if args.chunk_size <= 0:
        raise InputError(f"--chunk-size must be a positive integer, got {args.chunk_size}")
    dataset = Path(args.dataset) if args.dataset else output_dir / "dataset.h5"
    if args.dataset:
        n_records = read_dataset(dataset).n_households
    else:
        n_records = prepare_dataset(dataset, output_dir / "dataset_geography.npz", n_clones=args.n_clones,
                                    seed=args.seed).households
    builder = UnifiedMatrixBuilder(args.db or default_targets_path(), args.year, dataset, work_dir=output_dir / "work")
    return builder, assign_geography(n_records, args.n_clones, seed=args.seed)


def build(builder: UnifiedMatrixBuilder, geography: CloneGeography, args: argparse.Namespace):
    """The matrix, chunked (shards kept with --keep-chunks or --chunk-dir, and always on Modal) or not."""
    takeup = not args.skip_takeup_rerandomize
    if not args.chunked_matrix:
        return builder.build_matrix(geography, rerandomize_takeup=takeup)[1]
    return builder.build_matrix_chunked(
        geography, target_filter=None, chunk_size=args.chunk_size, chunk_plan=args.chunk_plan,
        chunk_dir=args.chunk_dir, keep_chunks=args.keep_chunks or args.parallel, resume_chunks=args.resume_chunks,
        rerandomize_takeup=takeup, dispatcher=choose_dispatcher(args), progress=True,
    )[1]
def run(args: argparse.Namespace) -> int:
    """Build the matrix and write its outputs (`pipeline.assemble.write_outputs`, as `bin/build-matrix` does);
    returns an exit code."""
    if args.plan:
        return print_plan(args)  # production_plan: the plan from measured inputs
    check_paths(args)
    output_dir = Path(args.output_dir)
    package = package_path(args.package_output, output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    builder, geography = make_builder(args, output_dir)
    matrix = build(builder, geography, args)
    write_outputs(output_dir, matrix, builder.state_dir, report_dir=output_dir, package=package,
                  run=builder.chunk_run if args.chunked_matrix else None, parameters=build_parameters(args))
    print(f"matrix {matrix.shape[0]} x {matrix.shape[1]}, {matrix.nnz} non-zeros: {output_dir / 'X.npz'}")
    return 0


def build_parameters(args: argparse.Namespace) -> dict:
    """The flags that define the build (not -q/-v, --plan or --version)."""
    return {k: v for k, v in vars(args).items() if k not in ("quiet", "verbose", "plan")}


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
