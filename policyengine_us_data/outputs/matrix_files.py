"""The matrix files a build leaves in its output directory, and upstream's calibration package.

Everything downstream reads is written atomically and without pickle: `X.npz` (CSR, opened with
`scipy.sparse.load_npz`), `targets.csv` (one line per matrix row, in row order), `metadata.json`
and `geography.npz` (per column, opened with `np.load(..., allow_pickle=False)`). The one pickle,
`calibration_package.pkl`, exists only because existing downstream code loads upstream's package;
we write it and never read it back.
"""

from __future__ import annotations

import csv
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from policyengine_us_data.datasets.geography import BLOCK_WIDTH, CloneGeography
from policyengine_us_data.targets.targets import TargetTable
from policyengine_us_data.datasets.household_data import HouseholdData
from policyengine_us_data.errors import InputError
from policyengine_us_data.utils.atomic import atomic_path, atomic_write_json
from policyengine_us_data.utils.hashing import file_sha256
from policyengine_us_data.utils.paths import check_output_file

__all__ = [
    "MATRIX_FILE", "TARGETS_FILE", "METADATA_FILE", "GEOGRAPHY_FILE", "TARGET_COLUMNS", "PACKAGE_KEYS",
    "write_matrix_outputs", "write_calibration_package", "initial_weights",
]

MATRIX_FILE = "X.npz"
TARGETS_FILE = "targets.csv"
METADATA_FILE = "metadata.json"
GEOGRAPHY_FILE = "geography.npz"
METADATA_FORMAT = "matrix_metadata/1"
GEOGRAPHY_FORMAT = "matrix_geography/1"
TARGET_COLUMNS = ("row", "target_id", "name", "variable", "geo_level", "geographic_id", "value", "period",
                  "reform_id")
PACKAGE_KEYS = ("X_sparse", "targets_df", "target_names", "metadata", "initial_weights", "cd_geoid",
                "block_geoid")


def _check_shapes(matrix: sp.spmatrix, targets: TargetTable, geography: CloneGeography) -> sp.csr_matrix:
    """The matrix as CSR, after checking it has one row per target and one column per clone column."""
    if not sp.issparse(matrix):
        raise InputError(f"the matrix must be a scipy sparse matrix, got {type(matrix).__name__}.")
    n_rows, n_cols = matrix.shape
    if n_rows != len(targets):
        raise InputError(f"the matrix has {n_rows} rows but the target table has {len(targets)}: "
                         "write the targets the matrix was built from.")
    if n_cols != geography.n_columns:
        raise InputError(f"the matrix has {n_cols} columns but the geography has {geography.n_columns} "
                         f"({geography.n_records} records x {geography.n_clones} clones): pass the build's geography.")
    return matrix.tocsr() if matrix.format != "csr" else matrix


def matrix_stats(matrix: sp.spmatrix) -> dict[str, Any]:
    """Shape, nnz and density: the three numbers every summary of the matrix starts with."""
    n_rows, n_cols = matrix.shape
    cells = n_rows * n_cols
    return {"shape": [int(n_rows), int(n_cols)], "nnz": int(matrix.nnz),
            "density": float(matrix.nnz / cells) if cells else 0.0}


def _write_matrix(path: Path, matrix: sp.csr_matrix, compressed: bool) -> dict[str, Any]:
    # An open handle, not a name: save_npz appends ".npz" to names lacking it, which would miss the temp file.
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            sp.save_npz(handle, matrix, compressed=compressed)
        info = {"sha256": file_sha256(tmp), "bytes": os.path.getsize(tmp)}
    return info


def _write_targets_csv(path: Path, targets: TargetTable) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(TARGET_COLUMNS)
        for r in targets.rows:
            writer.writerow([r.row, r.target_id, r.name, r.variable, r.geo_level, r.geographic_id, repr(float(r.value)),
                             r.period, r.reform_id])


def _write_geography(path: Path, geography: CloneGeography) -> None:
    arrays = {
        "format": np.array(GEOGRAPHY_FORMAT),
        "n_records": np.array(geography.n_records, np.int64),
        "n_clones": np.array(geography.n_clones, np.int64),
        "state_fips": np.ascontiguousarray(geography.state_fips, np.int32),
        "cd_geoid": np.ascontiguousarray(geography.cd_geoid, np.int32),
        "county_fips": np.ascontiguousarray(geography.county_fips, np.int32),
        # fixed-width unicode, never object: readable with allow_pickle=False
        "block_geoid": np.ascontiguousarray(geography.block_geoid, dtype=f"<U{BLOCK_WIDTH}"),
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)


def write_matrix_outputs(
    out_dir: str | os.PathLike,
    matrix: sp.spmatrix,
    targets: TargetTable,
    geography: CloneGeography,
    metadata: dict[str, Any],
    *,
    compressed: bool = False,
) -> dict[str, Path]:
    """Write X.npz, targets.csv, geography.npz and metadata.json into `out_dir`, each atomically.

    `metadata` (lineage signature, versions, parameters, timings, ...) is stored as given beside the
    computed shape, nnz, density, targets fingerprint and the matrix file's sha256. The matrix is
    stored uncompressed by default: at production size zlib would cost minutes for little gain.
    Returns the written paths by role: matrix, targets, geography, metadata.
    """
    csr = _check_shapes(matrix, targets, geography)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"matrix": out / MATRIX_FILE, "targets": out / TARGETS_FILE, "geography": out / GEOGRAPHY_FILE,
             "metadata": out / METADATA_FILE}
    matrix_info = _write_matrix(paths["matrix"], csr, compressed)
    _write_targets_csv(paths["targets"], targets)
    _write_geography(paths["geography"], geography)
    document = dict(metadata)
    document.update(matrix_stats(csr))
    document.update({
        "format": METADATA_FORMAT,
        "n_records": int(geography.n_records),
        "n_clones": int(geography.n_clones),
        "targets_fingerprint": targets.fingerprint(),
        "files": {MATRIX_FILE: matrix_info},
    })
    atomic_write_json(paths["metadata"], document)
    return paths


def write_calibration_package(
    path: str | os.PathLike,
    matrix: sp.spmatrix,
    targets: TargetTable,
    geography: CloneGeography,
    metadata: dict[str, Any],
    initial_weights: np.ndarray,
) -> Path:
    """Write upstream's `calibration_package.pkl` (same keys) atomically, for existing downstream code.

    An output only: this project never unpickles it. `cd_geoid` holds strings like upstream's ("601");
    `targets_df` is a pandas DataFrame (pandas is imported here, not at module import).
    """
    import pandas as pd

    check_output_file(path, "calibration package")  # never creates its directory
    csr = _check_shapes(matrix, targets, geography)
    weights = np.asarray(initial_weights, dtype=np.float64)
    if weights.shape != (csr.shape[1],):
        raise InputError(f"initial_weights has shape {weights.shape}, expected ({csr.shape[1]},): one weight per "
                         "matrix column; build it with outputs.matrix_files.initial_weights(data, n_clones).")
    package = {
        "X_sparse": csr,
        "targets_df": pd.DataFrame(targets.records()),
        "target_names": [r.name for r in targets.rows],
        "metadata": dict(metadata),
        "initial_weights": weights,
        "cd_geoid": np.asarray(geography.cd_geoid).astype(str),
        "block_geoid": np.ascontiguousarray(geography.block_geoid, dtype=f"<U{BLOCK_WIDTH}"),
    }
    target = Path(path)
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        pickle.dump(package, handle, protocol=pickle.HIGHEST_PROTOCOL)
    return target


def initial_weights(data: HouseholdData, n_clones: int) -> np.ndarray:
    """Uncalibrated weight per column: each household's weight split evenly over its clones.

    Column `c = clone * n_records + record`, so the base weights / n_clones are tiled once per clone;
    the total equals the base dataset's total weight.
    """
    if n_clones < 1:
        raise InputError(f"n_clones must be at least 1, got {n_clones}.")
    if "household_weight" not in data.arrays:
        raise InputError("the dataset has no household_weight variable; add one (one value per household).")
    base = np.asarray(data.arrays["household_weight"], dtype=np.float64)
    if base.shape != (data.n_households,):
        raise InputError(f"household_weight has {base.size} values for {data.n_households} households; "
                         "it must hold one value per household.")
    return np.tile(base / n_clones, n_clones)
