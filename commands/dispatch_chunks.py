"""Step `dispatch` (resumable): run every chunk's kernel on the state the `constraints` step wrote."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from commands.errors import domain_errors
from commands.layout import RunLayout, read_json, write_json
from policyengine_us_data.dispatch import LocalChunkDispatcher, ModalChunkDispatcher
from policyengine_us_data.dispatch.modal_backend import (
    DEFAULT_CHUNK_SECONDS,
    DEFAULT_STARTUP_SECONDS,
    lookup_worker,
)
from policyengine_us_data.dispatch.worker import staging_root
from policyengine_us_data.shards.chunk_plan import DEFAULT_PLAN_KIND, PLAN_KINDS
from policyengine_us_data.dispatch.chunked_matrix_assembler import ChunkBuildError, kernel_version
from policyengine_us_data.dispatch.dispatch_estimate import estimate, measured_rate, planned_chunks
from policyengine_us_data.errors import InputError, RunLeaseHeld
from policyengine_us_data.pipeline.chunks import ChunkRun, run_chunks
from policyengine_us_data.utils.atomic import TEMP_PREFIX
from runner import BaseCommand, BuildState, CommandError

LOG = logging.getLogger(__name__)
DEFAULT_CHUNK_SIZE = 1_000


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def _households(args: argparse.Namespace, layout: RunLayout) -> int | None:
    """The households the dataset step keeps, when known without reading --dataset."""
    if not args.dataset:
        return min(args.households, args.target_households or args.households)
    if args.target_households:
        return args.target_households
    if layout.dataset_summary.exists():  # the dataset step read that file here before
        summary = read_json(layout.dataset_summary)
        if summary.get("source") == args.dataset:
            return int(summary["households"])
    return None


class DispatchChunks(BaseCommand):
    """Partition the columns into chunks and compute each chunk's shard on the chosen backend."""

    resumable = True
    params = ("chunk_size", "chunk_plan")
    outputs = ("chunks",)  # the folders it writes (see BaseCommand.outputs)

    @classmethod
    def code_identity(cls) -> dict[str, str] | str:
        """The project modules this step imports plus the kernel's own code: editing the kernel makes it stale."""
        code = super().code_identity()
        return {**code, "kernel": kernel_version()[:16]} if isinstance(code, dict) else code + ":" + kernel_version()[:16]

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE,
                            help="columns per chunk (production: 25000; default %(default)s)")
        parser.add_argument("--chunk-plan", choices=PLAN_KINDS, default=DEFAULT_PLAN_KIND,
                            help="which columns share a chunk: 'state' groups them by state (a simulation costs "
                                 "by the states in it), 'contiguous' takes column ranges as upstream does; the "
                                 "matrix is the same (default %(default)s)")
        parser.add_argument("--backend", choices=("local", "modal"), default="local",
                            help="where chunks run (default %(default)s)")
        parser.add_argument("--workers", type=int, default=default_workers(),
                            help="local worker processes (default: the CPU count, %(default)s)")
        parser.add_argument("--num-matrix-workers", type=int, default=50,
                            help="Modal containers to fan out to (default %(default)s)")
        parser.add_argument("--run-id", default=None,
                            help="Modal run id; reuse it to resume on the volume (default: this run directory's "
                                 "last one, else a fresh id)")
        parser.add_argument("--chunk-seconds", type=float, default=DEFAULT_CHUNK_SECONDS,
                            help="Modal: declared seconds per chunk until one is measured; a batch gets start-up + "
                                 "3 x this per chunk before it is cancelled and resubmitted (default %(default)s)")
        parser.add_argument("--worker-startup-seconds", type=float, default=DEFAULT_STARTUP_SECONDS,
                            help="Modal: queueing, cold start, import and first simulation allowed per batch "
                                 "(default %(default)s)")
        parser.add_argument("--keep-chunks", action="store_true",
                            help="accepted for parity with unified_calibration: shards are this step's output, "
                                 "so the runner always keeps them (checkpointed, or on the Modal volume)")

    @staticmethod
    def make_dispatcher(args: argparse.Namespace, run_id: str | None = None):
        """The chosen backend's dispatcher; InputError for a bad worker count or run id."""
        if args.backend == "modal":
            return ModalChunkDispatcher(num_workers=args.num_matrix_workers, run_id=args.run_id or run_id,
                                        volume_root=str(staging_root()), chunk_seconds=args.chunk_seconds,
                                        startup_seconds=args.worker_startup_seconds)
        return LocalChunkDispatcher(workers=args.workers)

    @classmethod
    def precheck(cls, args: argparse.Namespace) -> None:
        """Refuse a bad chunk size, worker count or run id, and Modal without credentials, a deployed app or a
        mounted staging volume (outside the coordinator), before the runner touches the run directory and
        before policyengine-us is loaded."""
        with domain_errors():
            if args.chunk_size <= 0:
                raise InputError(f"chunk size must be a positive integer, got {args.chunk_size}: "
                                 "pass --chunk-size N with N >= 1")
            cls.make_dispatcher(args)
            if args.backend == "modal":
                lookup_worker()
                if not staging_root().is_dir():
                    raise InputError(
                        f"no staging volume at {staging_root()}: the Modal backend runs inside the coordinator "
                        "container. Start it with `modal run policyengine_us_data/modal_app/app.py --dataset FILE "
                        "--db FILE --run-id ID` (see the README's Modal section)")

    @classmethod
    def describe(cls, args: argparse.Namespace, run_dir: Path) -> dict | None:
        """For --dry-run: the plan's chunk count and an estimate from the chunk times last measured here."""
        layout = RunLayout(run_dir)
        households = _households(args, layout)
        if households is None:
            return {"summary": "chunk count known once the dataset step has read --dataset", "chunks": None}
        with domain_errors():
            chunks, columns = planned_chunks(households, args.n_clones, args.seed, args.chunk_plan, args.chunk_size)
        last = read_json(layout.dispatch_summary) if layout.dispatch_summary.exists() else None
        rate = measured_rate(last)
        workers = args.workers if args.backend == "local" else min(args.num_matrix_workers, chunks)
        seconds = estimate(columns, workers, rate)
        text = f"{chunks} {args.chunk_plan} chunks of at most {args.chunk_size} columns ({columns} columns)"
        if seconds is None:
            text += "; estimate: no measurement yet"
        else:
            text += (f"; estimate ~{seconds:.0f} s on {workers} worker(s) (from {rate['chunks_measured']} chunks "
                     f"measured in this run directory's last dispatch, {rate['seconds_per_chunk']:.1f} s each"
                     + (f", warm-up {rate['warm_up_seconds']:.0f} s" if rate["warm_up_seconds"] else "") + ")")
        return {"summary": text, "chunks": chunks, "columns": columns, "chunk_plan": args.chunk_plan,
                "chunk_size": args.chunk_size, "workers": workers, "estimate_s": seconds, "measured": rate}

    def dispatcher(self, layout: RunLayout):
        """The backend's dispatcher; on Modal without --run-id, this run directory's last run id (resume)."""
        previous = read_json(layout.dispatch_summary).get("run_id") if layout.dispatch_summary.exists() else None
        return self.make_dispatcher(self.args, previous)

    def run(self, state: BuildState) -> None:
        layout = RunLayout(state.run_dir)
        for stale in layout.chunk_dir.glob(TEMP_PREFIX + "*"):
            stale.unlink(missing_ok=True)  # half-written files of a killed attempt we resume on top of
        with domain_errors():
            try:
                run = run_chunks(layout.state_dir, layout.chunk_dir, chunk_size=self.args.chunk_size,
                                 chunk_plan=self.args.chunk_plan, dispatcher=self.dispatcher(layout),
                                 restart_other_lineage=True, progress=True)  # another lineage's shards are ours to drop
            except ChunkBuildError as exc:
                raise CommandError(str(exc)) from None
            except RunLeaseHeld as exc:
                raise CommandError(str(exc), exit_code=3) from None
        summary = run.to_json()
        # only off-directory shards (the Modal volume) are named; local ones move with the run directory
        summary["chunk_dir"] = None if run.chunk_dir == layout.chunk_dir else str(run.chunk_dir)
        summary.update(backend=self.args.backend,
                       workers=self.args.workers if self.args.backend == "local" else self.args.num_matrix_workers)
        write_json(layout.dispatch_summary, summary)
        LOG.info("dispatch: %d chunks computed, %d reused", run.computed, run.reused)


def read_chunk_run(layout: RunLayout) -> ChunkRun:
    """The dispatch step's `ChunkRun`, with its chunk directory resolved (local shards live in the run directory)."""
    summary = read_json(layout.dispatch_summary)
    return ChunkRun.from_json({**summary, "chunk_dir": summary.get("chunk_dir") or layout.chunk_dir})
