"""UnifiedMatrixBuilder: upstream's public entry points over the chunked core.

`build_matrix()` is the non-chunked path for small callers: one simulation of every column.
`build_matrix_chunked()` keeps upstream's public parameters and delegates to
`ChunkedMatrixAssembler`; both return (targets table, CSR matrix, target names) and give the
same matrix, array for array.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from policyengine_us_data.calibration.build_state import load_build_state, write_build_state
from policyengine_us_data.calibration.chunk_kernel import compute_entries
from policyengine_us_data.calibration.chunk_plan import DEFAULT_PLAN_KIND
from policyengine_us_data.calibration.chunked_matrix_assembler import ChunkedMatrixAssembler
from policyengine_us_data.calibration.geography import CloneGeography
from policyengine_us_data.calibration.targets import TargetTable, load_targets
from policyengine_us_data.datasets.h5io import read_dataset
from policyengine_us_data.errors import InputError


def reference_csr(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """The matrix scipy builds from COO entries: the reference every assembly must equal."""
    index_dtype = np.int32 if max(shape) < 2**31 and len(vals) < 2**31 else np.int64
    coo = sp.coo_matrix((vals.astype(np.float64), (rows.astype(index_dtype), cols.astype(index_dtype))), shape=shape)
    matrix = coo.tocsr()
    matrix.sum_duplicates()
    matrix.sort_indices()
    return matrix


def targets_frame(table: TargetTable):
    """Upstream returns a pandas DataFrame; build one lazily (pandas is only needed here)."""
    import pandas as pd

    from policyengine_us_data.outputs.matrix_files import targets_records

    return pd.DataFrame(targets_records(table))


def _db_path(db_uri: str | os.PathLike) -> str:
    text = str(db_uri)
    return text[len("sqlite:///"):] if text.startswith("sqlite:///") else text


class UnifiedMatrixBuilder:
    """Builds the calibration matrix for one dataset, target database and build year."""

    def __init__(
        self,
        db_uri: str | os.PathLike,
        time_period: int,
        dataset_path: str | os.PathLike,
        *,
        work_dir: str | os.PathLike | None = None,
        simulator: str = "policyengine",
        known_variables: set[str] | None = None,
        uprating=None,
    ) -> None:
        self.db_path = _db_path(db_uri)
        self.time_period = int(time_period)
        self.dataset_path = str(dataset_path)
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="unified-matrix-"))
        self.simulator = simulator
        self.known_variables = known_variables
        self.uprating = uprating
        self.targets: TargetTable | None = None

    def load_targets(self, target_filter: dict[str, Any] | None = None) -> TargetTable:
        """Select and sort the target rows (filters: variables, geo_levels, target_ids)."""
        target_filter = dict(target_filter or {})
        unknown = set(target_filter) - {"variables", "geo_levels", "target_ids"}
        if unknown:
            raise InputError(
                f"unknown target_filter keys {sorted(unknown)}: use 'variables', 'geo_levels' or 'target_ids'"
            )
        self.targets = load_targets(
            self.db_path,
            self.time_period,
            known_variables=self.known_variables,
            uprating=self.uprating,
            **target_filter,
        )
        return self.targets

    def prepare_state(
        self, geography: CloneGeography, target_filter: dict | None = None, rerandomize_takeup: bool = True
    ) -> Path:
        """Write the shared build state every chunk reads."""
        state_dir = self.work_dir / "state"
        write_build_state(
            state_dir,
            data=read_dataset(self.dataset_path),
            geography=geography,
            targets=self.load_targets(target_filter),
            year=self.time_period,
            rerandomize_takeup=rerandomize_takeup,
            simulator=self.simulator,
        )
        return state_dir

    def build_matrix(
        self,
        geography: CloneGeography,
        sim: Any = None,
        target_filter: dict | None = None,
        hierarchical_domains: Sequence[str] | None = None,
        cache_dir: str | None = None,
        sim_modifier: Any = None,
        rerandomize_takeup: bool = True,
        county_level: bool = True,
        workers: int = 1,
    ):
        """Non-chunked build: one simulation over every column. For small callers and as the
        reference the chunked path must equal. `sim`, `hierarchical_domains`, `cache_dir`,
        `sim_modifier`, `county_level` and `workers` are accepted for upstream compatibility;
        the columns are simulated from the dataset under each clone's geography instead."""
        state_dir = self.prepare_state(geography, target_filter, rerandomize_takeup)
        inputs = load_build_state(state_dir)
        entries = compute_entries(inputs, np.arange(inputs.n_columns))
        matrix = reference_csr(entries.rows, entries.cols, entries.vals, (inputs.n_rows, inputs.n_columns))
        return targets_frame(inputs.targets), matrix, [row.name for row in inputs.targets.rows]

    def build_matrix_chunked(
        self,
        geography: CloneGeography,
        sim: Any = None,
        target_filter: dict | None = None,
        hierarchical_domains: Sequence[str] | None = None,
        chunk_size: int = 25_000,
        chunk_dir: str | None = None,
        keep_chunks: bool = False,
        resume_chunks: bool = False,
        rerandomize_takeup: bool = True,
        parallel: bool = False,
        num_matrix_workers: int = 50,
        run_id: str = "",
        dispatcher=None,
        progress: bool = False,
        chunk_plan: str = DEFAULT_PLAN_KIND,
    ):
        """Chunked build through ChunkedMatrixAssembler; same return as build_matrix().

        `chunk_plan` (ours, not upstream's): "state" (default) groups each chunk's columns by state,
        "contiguous" takes upstream's column ranges; the matrix is the same.
        """
        state_dir = self.prepare_state(geography, target_filter, rerandomize_takeup)
        chunks = Path(chunk_dir) if chunk_dir else self.work_dir / "matrix_chunks"
        if dispatcher is None and parallel:
            from policyengine_us_data.calibration.chunk_dispatch import ModalChunkDispatcher

            dispatcher = ModalChunkDispatcher(num_workers=num_matrix_workers, run_id=run_id)
        assembler = ChunkedMatrixAssembler(
            state_dir, chunks, chunk_size=chunk_size, chunk_plan=chunk_plan, dispatcher=dispatcher,
            resume=resume_chunks, progress=progress,
        )
        matrix = assembler.build()
        if not keep_chunks:
            assembler.remove_shards()
        inputs = load_build_state(state_dir)
        return targets_frame(inputs.targets), matrix, [row.name for row in inputs.targets.rows]
