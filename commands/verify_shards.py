"""Step `verify`: prove every planned shard is present, intact and from this lineage, and that the
shards' column sets cover every column exactly once."""

from __future__ import annotations

import argparse
import logging
import time

from commands.errors import domain_errors
from commands.layout import RunLayout, read_json
from policyengine_us_data.outputs.report import write_verify_report
from policyengine_us_data.calibration.chunked_matrix_assembler import ChunkedMatrixAssembler
from policyengine_us_data.errors import ArtifactError
from runner import BaseCommand, BuildState, CommandError

LOG = logging.getLogger(__name__)


def assembler_for(layout: RunLayout, *, deep: bool = True) -> ChunkedMatrixAssembler:
    """The coordinator of the chunks dispatch made (same state, directory, chunk size and plan)."""
    summary = read_json(layout.dispatch_summary)
    chunk_dir = summary.get("chunk_dir") or layout.chunk_dir  # on the staging volume for --backend modal
    return ChunkedMatrixAssembler(layout.state_dir, chunk_dir, chunk_size=summary["chunk_size"],
                                  chunk_plan=summary.get("chunk_plan", "contiguous"), deep_verify=deep, progress=False)


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
            assembler = assembler_for(layout, deep=self.args.deep)
            plan = assembler.classify()
        by_id = {chunk.chunk_id: chunk for chunk in plan.todo}
        damaged = [
            {"chunk_id": cid, "path": by_id[cid].shard_path, "defect": reason}
            for cid, reason in sorted(plan.reasons.items())
        ]
        uncovered = [] if damaged else self._cover_defects(assembler)  # every shard sound: prove the cover
        damaged += uncovered
        summary = {
            "chunk_plan": assembler.chunk_plan,
            "chunks_checked": len(plan.todo) + len(plan.done),
            "intact": len(plan.done) - len(uncovered),
            "columns_covered_once": 0 if damaged else assembler.n_columns,
            "damaged": damaged,
            "deep": bool(self.args.deep),
            "lineage_signature": assembler.signature,
            "seconds": round(time.perf_counter() - start, 3),
        }
        write_verify_report(layout.verify_dir / "verify.json", summary)
        if damaged:
            lines = "; ".join(f"chunk {d['chunk_id']}: {d['defect']}" for d in damaged)
            raise CommandError(
                f"{len(damaged)} damaged chunk(s): {lines}. Run `bin/build-matrix --to assemble` again: "
                "dispatch recomputes exactly these."
            )
        LOG.info("verify: %d shards intact (%s), each of the %d columns covered exactly once", summary["intact"],
                 "deep" if self.args.deep else "headers", assembler.n_columns)

    @staticmethod
    def _cover_defects(assembler: ChunkedMatrixAssembler) -> list[dict]:
        """Prove the intact shards' column sets cover every column once; else name the offending shard."""
        try:
            assembler.prove_cover()
        except ArtifactError as exc:
            by_path = {chunk.shard_path: chunk.chunk_id for chunk in assembler.plans()}
            return [{"chunk_id": by_path.get(str(exc.path), -1), "path": str(exc.path), "defect": exc.defect}]
        return []
