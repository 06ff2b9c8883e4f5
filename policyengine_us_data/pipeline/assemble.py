"""Step 5: stream the shards into the CSR matrix, and write every output of a build (in one place)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import scipy.sparse as sp

from policyengine_us_data.kernel.build_state import load_build_state
from policyengine_us_data.shards.csr_stream import load_csr_parts
from policyengine_us_data.errors import InputError
from policyengine_us_data.outputs.matrix_files import initial_weights, write_calibration_package, write_matrix_outputs
from policyengine_us_data.outputs.report import build_report
from policyengine_us_data.pipeline.chunks import ChunkRun, chunk_assembler
from policyengine_us_data.utils.paths import check_output_dir, check_output_file


def assemble_matrix(state_dir: Path, run: ChunkRun, *, out_of_core: bool = False,
                    parts_dir: Path | None = None) -> sp.csr_matrix:
    """Stream this lineage's shards into the CSR matrix (through arrays on disk in `parts_dir` if out of core)."""
    assembler = chunk_assembler(state_dir, run.chunk_dir, chunk_size=run.chunk_size, chunk_plan=run.chunk_plan,
                                deep_verify=False, progress=False)
    if not out_of_core:
        return assembler.assemble()
    parts = Path(parts_dir or run.chunk_dir / "csr")
    assembler.assemble(out_of_core=True, out_dir=parts)
    return load_csr_parts(parts)


def package_path(path: str | os.PathLike | None, out_root: Path) -> Path | None:
    """Where `--package-output` goes in both CLIs: an absolute path as given (its directory must exist), a
    relative one inside the build's output root (the run directory, or `--output-dir`), never outside it."""
    if not path:
        return None
    package = Path(path)
    if package.is_absolute():
        return check_output_file(package, "--package-output")
    if ".." in package.parts:
        raise InputError(f"--package-output {package}: a relative path lies inside the output directory and "
                         "cannot leave it with '..'; give an absolute path instead.")
    return out_root / package


def versions() -> dict[str, str]:
    """The installed versions that define what the matrix means."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("policyengine-us", "policyengine-core", "numpy", "scipy"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def write_outputs(out_dir: Path, matrix: sp.spmatrix, state_dir: Path, *, report_dir: Path,
                  package: Path | None = None, run: ChunkRun | None = None, parameters: dict | None = None,
                  timings: dict | None = None, verify_summary: dict | None = None) -> dict[str, Any]:
    """The one writer of a build's outputs: X.npz, targets.csv, metadata.json and geography.npz in `out_dir`,
    upstream's package at `package`, the run report in `report_dir`. Returns the metadata (the same keys in
    metadata.json and the package's `metadata`, whichever front end built the matrix)."""
    inputs = load_build_state(state_dir)
    metadata = {
        "year": inputs.year, "n_records": inputs.n_records, "n_clones": inputs.n_clones,
        "rerandomize_takeup": inputs.rerandomize_takeup, "simulator": inputs.simulator,
        "lineage_signature": run.lineage_signature if run else None, "lineage": run.lineage if run else None,
        "chunk_plan": run.chunk_plan if run else None, "chunks": len(run.results) if run else None,
        "versions": versions(), "parameters": dict(parameters or {}),
        "timings": {"dispatch_wall_seconds": run.wall_seconds if run else None,
                    "warm_up_seconds": run.warm_up_seconds if run else None, **(timings or {})},
    }
    write_matrix_outputs(out_dir, matrix, inputs.targets, inputs.geography, metadata)
    weights = initial_weights(inputs.data, inputs.n_clones)
    if package is not None:
        check_output_dir(package.parent, "--package-output's directory").mkdir(parents=True, exist_ok=True)
        write_calibration_package(package, matrix, inputs.targets, inputs.geography, metadata, weights)
    build_report(report_dir, matrix=matrix, targets=inputs.targets, weights=weights,
                 chunk_results=run.results if run else [], verify_summary=verify_summary, metadata=metadata)
    return metadata
