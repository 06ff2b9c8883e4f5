"""The kernel and the chunked build on the toy simulator: fast checks of every seam.

The same properties are checked with the real policyengine-us in tests/integration/.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from policyengine_us_data.calibration.build_state import load_build_state
from policyengine_us_data.calibration.chunk_dispatch import LocalChunkDispatcher
from policyengine_us_data.calibration.chunk_kernel import compute_entries
from policyengine_us_data.calibration.chunked_matrix_assembler import ChunkedMatrixAssembler
from policyengine_us_data.calibration.lineage import ChunkManifest
from policyengine_us_data.calibration.simulator import get_simulator
from policyengine_us_data.calibration.unified_matrix_builder import reference_csr
from policyengine_us_data.errors import LineageMismatch
from tests.support.expected_cells import expected_cells
from tests.unit.kernel.conftest import TOY


def full_matrix(state_dir):
    inputs = load_build_state(state_dir)
    e = compute_entries(inputs, 0, inputs.n_columns)
    return reference_csr(e.rows, e.cols, e.vals, (inputs.n_rows, inputs.n_columns))


def chunked_matrix(state_dir, chunk_dir, chunk_size, **kwargs):
    assembler = ChunkedMatrixAssembler(state_dir, chunk_dir, chunk_size=chunk_size, progress=False,
                                       dispatcher=LocalChunkDispatcher(workers=1), **kwargs)
    return assembler, assembler.build()


def assert_same(a, b):
    assert a.shape == b.shape
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data, b.data)


def test_matrix_matches_independent_cell_computation(toy_state):
    inputs = load_build_state(toy_state)
    matrix = full_matrix(toy_state)
    columns = list(range(0, inputs.n_columns, 7))
    expected = expected_cells(inputs.data, inputs.geography, inputs.targets, get_simulator(TOY), columns, takeup=True)
    coo = matrix.tocoo()
    got = {(int(r), int(c)): v for r, c, v in zip(coo.row, coo.col, coo.data) if c in set(columns)}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
    # every geo level and every rule contributes somewhere
    levels = {inputs.targets.rows[r].geo_level for r, _ in got}
    assert levels == {"national", "state", "district"}
    assert {inputs.targets.rows[r].reform_id for r, _ in got} == {0, 1}


@pytest.mark.parametrize("chunk_size", [7, 20, 100])
def test_chunked_equals_non_chunked(toy_state, tmp_path, chunk_size):
    _, chunked = chunked_matrix(toy_state, tmp_path / f"chunks{chunk_size}", chunk_size)
    assert_same(chunked, full_matrix(toy_state))


def test_resume_recomputes_only_damaged_chunks(toy_state, tmp_path):
    chunk_dir = tmp_path / "chunks"
    assembler, first = chunked_matrix(toy_state, chunk_dir, 20)
    plans = assembler.plans()
    assert len(plans) == 5 and plans[-1].col_end - plans[-1].col_start == 20
    os.remove(plans[0].shard_path)
    os.remove(plans[3].shard_path)
    raw = bytearray(open(plans[2].shard_path, "rb").read())
    raw[len(raw) // 2] ^= 0xFF  # inside the array data
    open(plans[2].shard_path, "wb").write(bytes(raw))
    resumed, second = chunked_matrix(toy_state, chunk_dir, 20, resume=True)
    resume_plan = resumed.classify()
    assert not resume_plan.todo
    assert_same(first, second)
    counts = {cid: rec.attempts for cid, rec in ChunkManifest.load(chunk_dir / "chunk_manifest.json").chunks.items()}
    assert counts == {0: 2, 1: 1, 2: 2, 3: 2, 4: 1}


def test_assembly_refuses_shards_of_another_lineage(toy_state, tmp_path):
    """Two runs on one chunk directory: shards another build wrote must not enter this matrix."""
    from policyengine_us_data.errors import ArtifactError

    assembler, _ = chunked_matrix(toy_state, tmp_path / "chunks", 20)
    assembler.signature = "another-run"  # the shards on disk are now another build's
    with pytest.raises(ArtifactError, match=r"chunk\(s\) 0, 1, 2, 3, 4 carry another build's lineage"):
        assembler.assemble()


def test_changed_chunk_size_refuses_stale_shards(toy_state, tmp_path):
    chunk_dir = tmp_path / "chunks"
    chunked_matrix(toy_state, chunk_dir, 20)
    with pytest.raises(LineageMismatch, match="chunk_size: 20 -> 25"):
        chunked_matrix(toy_state, chunk_dir, 25, resume=True)


def test_takeup_draws_do_not_depend_on_chunking(toy_state):
    inputs = load_build_state(toy_state)
    from policyengine_us_data.calibration.entity_clone import materialise_columns

    whole = materialise_columns(inputs.data, inputs.geography, 0, inputs.n_columns, rerandomize_takeup=True)
    part = materialise_columns(inputs.data, inputs.geography, 37, 61, rerandomize_takeup=True)
    for name in ("takes_up_snap_if_eligible", "takes_up_medicaid_if_eligible", "takes_up_eitc"):
        entity = "person" if name == "takes_up_medicaid_if_eligible" else None
        if entity == "person":
            hh = whole.person_entity_index("household")
            sel = (hh >= 37) & (hh < 61)
        else:
            ent = "spm_unit" if "snap" in name else "tax_unit"
            hh = whole.entity_household_index(ent)
            sel = (hh >= 37) & (hh < 61)
        np.testing.assert_array_equal(whole.arrays[name][sel], part.arrays[name])
