"""Step `assemble`: stream the shards into the final CSR; write the matrix files, package and report."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from commands.dispatch_chunks import read_chunk_run
from commands.errors import domain_errors
from commands.layout import RunLayout, read_json
from policyengine_us_data.pipeline.assemble import assemble_matrix, package_path, write_outputs
from runner import BaseCommand, BuildState

LOG = logging.getLogger(__name__)


def build_parameters(args: argparse.Namespace) -> dict:
    """The flags that define the build (every step's `params`), not the runner's (`--status`, `--clean`...)."""
    from commands.build_constraint_cache import BuildConstraintCache
    from commands.dispatch_chunks import DispatchChunks
    from commands.prepare_dataset import PrepareDataset
    from commands.verify_shards import VerifyShards

    names = [n for step in (PrepareDataset, BuildConstraintCache, DispatchChunks, VerifyShards, AssembleCSR)
             for n in step.params]
    return {name: getattr(args, name, None) for name in names}


class AssembleCSR(BaseCommand):
    """Assemble the matrix with bounded memory and write outputs, package and report."""

    params = ("out_of_core", "package_output")
    outputs = ("matrix", ".assembly", "report.json", "report.md", "report.png")  # what it writes (BaseCommand.outputs)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--out-of-core", action=argparse.BooleanOptionalAction, default=False,
                            help="assemble into memory-mapped arrays on disk (resident memory ~0.1x the CSR)")
        parser.add_argument("--package-output", default=None, metavar="PATH",
                            help="also write upstream's calibration_package.pkl here (inside the run directory "
                                 "when relative)")

    @classmethod
    def precheck(cls, args: argparse.Namespace) -> None:
        """Refuse a package path that cannot be written before anything is built (parents are never created
        outside the run directory)."""
        with domain_errors():
            package_path(args.package_output, Path("."))

    def run(self, state: BuildState) -> None:
        layout = RunLayout(state.run_dir)
        start = time.perf_counter()
        with domain_errors():
            package = package_path(self.args.package_output, layout.run_dir)
            run = read_chunk_run(layout)
            matrix = assemble_matrix(layout.state_dir, run, out_of_core=self.args.out_of_core,
                                     parts_dir=layout.run_dir / ".assembly")
            write_outputs(layout.matrix_dir, matrix, layout.state_dir, report_dir=state.run_dir, package=package,
                          run=run, parameters=build_parameters(self.args), verify_summary=self._verify_summary(layout),
                          timings=self._timings(time.perf_counter() - start, state.completed))
        LOG.info("assemble: %d x %d matrix, %d non-zeros", matrix.shape[0], matrix.shape[1], matrix.nnz)

    @staticmethod
    def _verify_summary(layout: RunLayout) -> dict | None:
        path = layout.verify_dir / "verify.json"
        return read_json(path) if path.exists() else None

    def _timings(self, seconds: float, earlier: tuple[str, ...]) -> dict:
        """This step's time and the whole build's: every earlier step from its last successful run, plus this one."""
        steps = self.runner.step_seconds()
        return {"assemble_seconds": round(seconds, 3),
                "total_seconds": round(sum(v for k, v in steps.items() if k in earlier) + seconds, 3)}
