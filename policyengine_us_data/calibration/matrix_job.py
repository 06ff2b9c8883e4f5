"""The inputs and outputs of one CLI matrix build, outside the runner.

`unified_calibration` uses it to turn flags into a `UnifiedMatrixBuilder` with its dataset,
geography and real policyengine-us checks, and to write the same output files as
`bin/build-matrix`'s `assemble` step.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from policyengine_us_data.calibration.default_targets import default_targets_path
from policyengine_us_data.calibration.geography import CloneGeography, assign_geography
from policyengine_us_data.calibration.simulator import get_simulator
from policyengine_us_data.calibration.target_checks import variable_types_of
from policyengine_us_data.calibration.unified_matrix_builder import UnifiedMatrixBuilder
from policyengine_us_data.calibration.uprating import policyengine_uprating
from policyengine_us_data.datasets.h5io import read_dataset, write_dataset
from policyengine_us_data.datasets.synthetic import generate_synthetic
from policyengine_us_data.errors import InputError


@dataclass
class MatrixJob:
    """A builder plus the geography and output directory of one build."""

    builder: UnifiedMatrixBuilder
    geography: CloneGeography
    output_dir: Path

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "MatrixJob":
        if args.n_clones <= 0:
            raise InputError(f"--n-clones must be a positive integer, got {args.n_clones}")
        if args.chunk_size <= 0:
            raise InputError(f"--chunk-size must be a positive integer, got {args.chunk_size}")
        output_dir = Path(args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        dataset_path = Path(args.dataset) if args.dataset else output_dir / "dataset.h5"
        data = read_dataset(dataset_path) if args.dataset else generate_synthetic(seed=args.seed)
        if not args.dataset:
            write_dataset(dataset_path, data)
        system = get_simulator("policyengine").system
        builder = UnifiedMatrixBuilder(
            args.db or default_targets_path(), args.year, dataset_path,
            work_dir=output_dir / "work", known_variables=set(system.variables),
            uprating=policyengine_uprating(system), variable_type=variable_types_of(system),
        )
        geography = assign_geography(data.n_households, args.n_clones, seed=args.seed)
        return cls(builder=builder, geography=geography, output_dir=output_dir)

    def write_outputs(self, matrix, package_output: str | None = None, chunk_dir: Path | None = None) -> None:
        """X.npz, targets.csv, metadata.json, geography.npz, the report (and the package when asked)."""
        from policyengine_us_data.calibration.build_state import load_build_state
        from policyengine_us_data.outputs.matrix_files import (
            initial_weights,
            write_calibration_package,
            write_matrix_outputs,
        )

        inputs = load_build_state(self.builder.work_dir / "state")
        metadata = {"year": inputs.year, "n_records": inputs.n_records, "n_clones": inputs.n_clones,
                    "rerandomize_takeup": inputs.rerandomize_takeup}
        from policyengine_us_data.outputs.report import build_report

        write_matrix_outputs(self.output_dir, matrix, inputs.targets, inputs.geography, metadata)
        weights = initial_weights(inputs.data, inputs.n_clones)
        if package_output:
            write_calibration_package(package_output, matrix, inputs.targets, inputs.geography, metadata, weights)
        build_report(self.output_dir, matrix=matrix, targets=inputs.targets, weights=weights,
                     chunk_results=self._chunk_records(chunk_dir), metadata=metadata)

    @staticmethod
    def _chunk_records(chunk_dir: Path | None) -> list:
        from policyengine_us_data.calibration.lineage import ChunkManifest
        from policyengine_us_data.errors import ManifestError

        if chunk_dir is None or not (chunk_dir / "chunk_manifest.json").exists():
            return []
        try:
            return list(ChunkManifest.load(chunk_dir / "chunk_manifest.json").chunks.values())
        except ManifestError:
            return []
