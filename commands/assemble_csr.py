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
from policyengine_us_data.errors import InputError
from policyengine_us_data.outputs.matrix_files import (
    initial_weights,
    write_calibration_package,
    write_matrix_outputs,
)
from policyengine_us_data.outputs.report import build_report
from policyengine_us_data.utils.paths import check_output_dir, check_output_file
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
            if args.package_output:
                package = Path(args.package_output)
                if package.is_absolute():
                    check_output_file(package, "--package-output")
                elif ".." in package.parts:
                    raise InputError(f"--package-output {package}: a relative path lies inside the run directory "
                                     "and cannot leave it with '..'; give an absolute path instead.")

    def run(self, state: BuildState) -> None:
        layout = RunLayout(state.run_dir)
        start = time.perf_counter()
        with domain_errors():
            package = self._package_path(layout) if self.args.package_output else None
            assembler = assembler_for(layout, deep=False)
            matrix = self._assemble(assembler, layout)
            inputs = load_build_state(layout.state_dir)
            dispatch = read_json(layout.dispatch_summary)
            metadata = self._metadata(assembler, dispatch, time.perf_counter() - start, state.completed)
            write_matrix_outputs(layout.matrix_dir, matrix, inputs.targets, inputs.geography, metadata)
            weights = initial_weights(inputs.data, inputs.n_clones)
            if package is not None:
                write_calibration_package(package, matrix, inputs.targets, inputs.geography, metadata, weights)
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
        """The checked package path; a relative one lies in the run directory, whose folders the step may make."""
        path = Path(self.args.package_output)
        if not path.is_absolute():
            path = layout.run_dir / path
            check_output_dir(path.parent, "--package-output's directory").mkdir(parents=True, exist_ok=True)
        return check_output_file(path, "--package-output")

    @staticmethod
    def _verify_summary(layout: RunLayout) -> dict | None:
        path = layout.verify_dir / "verify.json"
        return read_json(path) if path.exists() else None

    def _metadata(self, assembler, dispatch: dict, seconds: float, earlier: tuple[str, ...]) -> dict:
        return {
            "lineage_signature": assembler.signature,
            "lineage": assembler.lineage,
            "versions": versions(),
            "parameters": build_parameters(self.args),
            "timings": {"dispatch_wall_seconds": dispatch.get("wall_seconds"), "assemble_seconds": round(seconds, 3),
                        "warm_up_seconds": dispatch.get("warm_up_seconds"),
                        # the build's steps, each from its last successful run, this one so far included
                        "total_seconds": round(sum(v for k, v in self.runner.step_seconds().items()
                                                   if k in earlier) + seconds, 3)},
            "chunks": dispatch.get("chunks"),
        }
