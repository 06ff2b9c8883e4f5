"""UnifiedMatrixBuilder: upstream's public entry points over the chunked core.

`build_matrix()` is the non-chunked path for small callers: one simulation of every column.
`build_matrix_chunked()` keeps upstream's public parameters and runs the pipeline's own steps
(`pipeline.state`, `pipeline.chunks`, `pipeline.assemble`, as `bin/build-matrix` does); both return (targets table, CSR matrix, target names) and give the
same matrix, array for array. Both accept upstream's `GeographyAssignment` wherever a geography
goes (converted once by `clone_and_assign.as_clone_geography`). With `chunk_dir` given, the chunked
path keeps its shards under `chunk_dir/coo/` as upstream does, and `resume_chunks=True` reuses them
after the lineage check; without it they live in the work directory and go unless `keep_chunks`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from policyengine_us_data.kernel.build_state import load_build_state
from policyengine_us_data.kernel.chunk_kernel import compute_entries
from policyengine_us_data.compat.clone_and_assign import GeographyAssignment, as_clone_geography
from policyengine_us_data.datasets.geography import CloneGeography
from policyengine_us_data.shards.shards import remove_shards
from policyengine_us_data.targets.targets import TargetTable
from policyengine_us_data.compat.upstream_chunk_cache import COO_DIR, refuse_misplaced_shards
from policyengine_us_data.errors import InputError
from policyengine_us_data.pipeline.assemble import assemble_matrix
from policyengine_us_data.pipeline.chunks import ChunkRun, run_chunks
from policyengine_us_data.pipeline.state import select_targets, write_state
from policyengine_us_data.utils.index_dtype import index_dtype


def reference_csr(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """The matrix scipy builds from COO entries: the reference every assembly must equal."""
    dtype = index_dtype(len(vals), *shape)
    coo = sp.coo_matrix((vals.astype(np.float64), (rows.astype(dtype), cols.astype(dtype))), shape=shape)
    matrix = coo.tocsr()
    matrix.sum_duplicates()
    matrix.sort_indices()
    return matrix


def targets_frame(table: TargetTable):
    """Upstream returns a pandas DataFrame; build one lazily (pandas is only needed here)."""
    import pandas as pd

    return pd.DataFrame(table.records())


Geography = CloneGeography | GeographyAssignment


def _db_path(db_uri: str | os.PathLike) -> str:
    text = str(db_uri)
    return text[len("sqlite:///"):] if text.startswith("sqlite:///") else text


class UnifiedMatrixBuilder:
    """Builds the calibration matrix for one dataset, target database and build year.

    `known_variables`, `uprating` and `variable_type` default to the simulator's own, as in `bin/build-matrix`'s
    constraints step, so both front ends give the same target values (pass an uprating function
    returning 1.0 to keep the database's values as they are).
    """

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
        variable_type=None,
    ) -> None:
        self.db_path = _db_path(db_uri)
        self.time_period = int(time_period)
        self.dataset_path = str(dataset_path)
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="unified-matrix-"))
        self.simulator = simulator
        self.known_variables = known_variables
        self.uprating = uprating
        self.variable_type = variable_type
        self.targets: TargetTable | None = None
        self.chunk_run: ChunkRun | None = None  # what the last build_matrix_chunked did (its chunks, lineage)

    @property
    def state_dir(self) -> Path:
        """The build state this builder writes and its chunks read."""
        return self.work_dir / "state"

    def load_targets(self, target_filter: dict[str, Any] | None = None) -> TargetTable:
        """Select and sort the target rows (filters: variables, geo_levels, target_ids)."""
        target_filter = dict(target_filter or {})
        unknown = set(target_filter) - {"variables", "geo_levels", "target_ids"}
        if unknown:
            raise InputError(
                f"unknown target_filter keys {sorted(unknown)}: use 'variables', 'geo_levels' or 'target_ids'"
            )
        self.targets = select_targets(self.db_path, self.time_period, simulator=self.simulator,
                                      known_variables=self.known_variables, uprating=self.uprating,
                                      variable_type=self.variable_type, **target_filter)
        return self.targets

    def prepare_state(
        self, geography: Geography, target_filter: dict | None = None, rerandomize_takeup: bool = True
    ) -> Path:
        """Write the shared build state every chunk reads (entities of the dataset from the simulator)."""
        write_state(self.state_dir, dataset=self.dataset_path, geography=as_clone_geography(geography),
                    targets=self.load_targets(target_filter), year=self.time_period,
                    rerandomize_takeup=rerandomize_takeup, simulator=self.simulator)
        return self.state_dir

    def build_matrix(
        self,
        geography: Geography,
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
        geography: Geography,
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
        shard_dir: str | None = None,
        chunk_plan: str = "contiguous",
    ):
        """Chunked build through the pipeline's steps; same return as build_matrix().

        Shards go to `shard_dir` if given (ours), else `chunk_dir/coo/`, else the work directory; a Modal
        dispatcher (`parallel`) writes them to its run's directory on the staging volume instead. Resuming refuses,
        as upstream does, shards of another lineage ("Chunk cache lineage mismatch") and a shard covering other
        columns than planned ("covers cols"); both are ValueErrors. `chunk_plan` (ours, not upstream's):
        "contiguous" (default here, so upstream's callers see upstream's shard ranges and counts) or "state",
        which groups each chunk's columns by state and costs a fraction of the simulation (the CLIs' default);
        the matrix is the same. Shards are kept with `keep_chunks`, `chunk_dir` or `shard_dir`.
        """
        state_dir = self.prepare_state(geography, target_filter, rerandomize_takeup)
        shards = Path(shard_dir or (Path(chunk_dir) / COO_DIR if chunk_dir else self.work_dir / "matrix_chunks"))
        if dispatcher is None and parallel:
            from policyengine_us_data.dispatch import ModalChunkDispatcher

            dispatcher = ModalChunkDispatcher(num_workers=num_matrix_workers, run_id=run_id)
        check = (lambda assembler: refuse_misplaced_shards(assembler.plans())) if resume_chunks else None
        self.chunk_run = run_chunks(state_dir, shards, chunk_size=chunk_size, chunk_plan=chunk_plan,
                                    dispatcher=dispatcher, resume=resume_chunks, progress=progress,
                                    before_dispatch=check)
        matrix = assemble_matrix(state_dir, self.chunk_run)
        if not (keep_chunks or chunk_dir or shard_dir):
            remove_shards(self.chunk_run.chunk_dir)
        inputs = load_build_state(state_dir)
        return targets_frame(inputs.targets), matrix, [row.name for row in inputs.targets.rows]
