"""Step `assemble`: stream the shards into the final CSR; write the matrix files and the run report."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from commands.errors import domain_errors
from commands.layout import RunLayout, read_json
from commands.verify_shards import assembler_for
from policyengine_us_data.calibration.build_state import load_build_state
from policyengine_us_data.calibration.csr_stream import load_csr_parts
from policyengine_us_data.outputs.matrix_files import (
    initial_weights,
    write_calibration_package,
    write_matrix_outputs,
)
from policyengine_us_data.outputs.report import build_report
from runner import BaseCommand, BuildState

LOG = logging.getLogger(__name__)


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("policyengine-us", "policyengine-core", "numpy", "scipy"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


class AssembleCSR(BaseCommand):
    """Assemble the matrix with bounded memory and write outputs, package and report."""

    params = ("out_of_core", "package_output")
    outputs = ("matrix", ".assembly", "report.json", "report.md", "report.png")  # what it writes (BaseCommand.outputs)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--out-of-core", action="store_true",
                            help="assemble into memory-mapped arrays on disk (resident memory ~0.1x the CSR)")
        parser.add_argument("--package-output", default=None, metavar="PATH",
                            help="also write upstream's calibration_package.pkl here (inside the run directory "
                                 "when relative)")

    def run(self, state: BuildState) -> None:
        layout = RunLayout(state.run_dir)
        start = time.perf_counter()
        with domain_errors():
            assembler = assembler_for(layout, deep=False)
            matrix = self._assemble(assembler, layout)
            inputs = load_build_state(layout.state_dir)
            dispatch = read_json(layout.dispatch_summary)
            metadata = self._metadata(assembler, dispatch, time.perf_counter() - start)
            write_matrix_outputs(layout.matrix_dir, matrix, inputs.targets, inputs.geography, metadata)
            weights = initial_weights(inputs.data, inputs.n_clones)
            if self.args.package_output:
                write_calibration_package(self._package_path(layout), matrix, inputs.targets,
                                          inputs.geography, metadata, weights)
            build_report(state.run_dir, matrix=matrix, targets=inputs.targets, weights=weights,
                         chunk_results=dispatch.get("results", []),
                         verify_summary=self._verify_summary(layout), metadata=metadata)
        LOG.info("assemble: %d x %d matrix, %d non-zeros", matrix.shape[0], matrix.shape[1], matrix.nnz)

    def _assemble(self, assembler, layout: RunLayout):
        if not self.args.out_of_core:
            return assembler.assemble()
        parts = layout.run_dir / ".assembly"
        assembler.assemble(out_of_core=True, out_dir=parts)
        return load_csr_parts(parts)

    def _package_path(self, layout: RunLayout) -> Path:
        path = Path(self.args.package_output)
        return path if path.is_absolute() else layout.run_dir / path

    @staticmethod
    def _verify_summary(layout: RunLayout) -> dict | None:
        path = layout.verify_dir / "verify.json"
        return read_json(path) if path.exists() else None

    def _metadata(self, assembler, dispatch: dict, seconds: float) -> dict:
        return {
            "lineage_signature": assembler.signature,
            "lineage": assembler.lineage,
            "versions": versions(),
            "parameters": {k: v for k, v in vars(self.args).items() if isinstance(v, (str, int, float, bool))},
            "timings": {"dispatch_wall_seconds": dispatch.get("wall_seconds"), "assemble_seconds": round(seconds, 3)},
            "chunks": dispatch.get("chunks"),
        }
