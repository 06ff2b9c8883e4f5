"""Step `verify`: prove every planned shard is present, intact and from this lineage, and that the
shards' column sets cover every column exactly once."""

from __future__ import annotations

import argparse
import logging
import time

from commands.dispatch_chunks import read_chunk_run
from commands.errors import domain_errors
from commands.layout import RunLayout
from policyengine_us_data.outputs.report import write_verify_report
from policyengine_us_data.pipeline.chunks import verify_chunks
from runner import BaseCommand, BuildState, CommandError

LOG = logging.getLogger(__name__)


class VerifyShards(BaseCommand):
    """Check every shard; name each damaged chunk and fail so the next dispatch recomputes them."""

    params = ("deep",)
    outputs = ("verify",)  # the folders it writes (see BaseCommand.outputs)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--deep", action=argparse.BooleanOptionalAction, default=False,
                            help="re-hash every shard's content instead of trusting headers and sizes")

    def run(self, state: BuildState) -> None:
        layout = RunLayout(state.run_dir)
        start = time.perf_counter()
        with domain_errors():
            summary = verify_chunks(layout.state_dir, read_chunk_run(layout), deep=self.args.deep)
        summary["seconds"] = round(time.perf_counter() - start, 3)
        write_verify_report(layout.verify_dir / "verify.json", summary)
        damaged = summary["damaged"]
        if damaged:
            lines = "; ".join(f"chunk {d['chunk_id']}: {d['defect']}" for d in damaged)
            raise CommandError(
                f"{len(damaged)} damaged chunk(s): {lines}. Run `bin/build-matrix --to assemble` again: "
                "dispatch recomputes exactly these."
            )
        LOG.info("verify: %d shards intact (%s), each of the %d columns covered exactly once", summary["intact"],
                 "deep" if self.args.deep else "headers", summary["columns_covered_once"])
