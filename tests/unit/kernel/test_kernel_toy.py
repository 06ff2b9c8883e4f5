"""The kernel and the chunked build on the toy simulator: fast checks of every seam.

The same properties are checked with the real policyengine-us in tests/integration/.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from policyengine_us_data.kernel.build_state import load_build_state
from policyengine_us_data.dispatch import LocalChunkDispatcher
from policyengine_us_data.kernel.chunk_kernel import compute_entries
from policyengine_us_data.dispatch.chunked_matrix_assembler import ChunkedMatrixAssembler
from policyengine_us_data.shards.lineage import ChunkManifest
from policyengine_us_data.kernel.simulator import get_simulator
from policyengine_us_data.calibration.unified_matrix_builder import reference_csr
from policyengine_us_data.errors import LineageMismatch
from tests.support.expected_cells import expected_cells
from tests.unit.kernel.conftest import TOY


def full_matrix(state_dir):
    inputs = load_build_state(state_dir)
    e = compute_entries(inputs, np.arange(inputs.n_columns))
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


@pytest.mark.parametrize("plan_kind", ["state", "contiguous"])
@pytest.mark.parametrize("chunk_size", [7, 20, 100])
def test_chunked_equals_non_chunked(toy_state, tmp_path, chunk_size, plan_kind):
    _, chunked = chunked_matrix(toy_state, tmp_path / f"chunks{chunk_size}", chunk_size, chunk_plan=plan_kind)
    assert_same(chunked, full_matrix(toy_state))


@pytest.mark.parametrize("out_of_core", [False, True])
def test_state_plan_assembles_interleaved_shards_into_the_contiguous_plans_arrays(toy_state, tmp_path, out_of_core):
    from policyengine_us_data.shards.csr_stream import load_csr_parts

    matrices = []
    for kind in ("state", "contiguous"):
        assembler = ChunkedMatrixAssembler(toy_state, tmp_path / kind, chunk_size=20, chunk_plan=kind,
                                           dispatcher=LocalChunkDispatcher(workers=1), progress=False)
        assembler.dispatch()
        result = assembler.assemble(out_of_core=out_of_core, out_dir=tmp_path / f"{kind}-csr")
        matrices.append(load_csr_parts(tmp_path / f"{kind}-csr") if out_of_core else result)
    state_shards = [ChunkedMatrixAssembler(toy_state, tmp_path / "state", chunk_size=20).columns(p)
                    for p in ChunkedMatrixAssembler(toy_state, tmp_path / "state", chunk_size=20).plans()]
    assert any(a[-1] > b[0] for a, b in zip(state_shards, state_shards[1:]))  # the shards do interleave
    assert_same(*matrices)


@pytest.mark.parametrize("plan_kind", ["state", "contiguous"])
def test_resume_recomputes_only_damaged_chunks(toy_state, tmp_path, plan_kind):
    chunk_dir = tmp_path / "chunks"
    assembler, first = chunked_matrix(toy_state, chunk_dir, 20, chunk_plan=plan_kind)
    plans = assembler.plans()
    assert len(plans) >= 5 and all(p.kind == plan_kind and p.col_end - p.col_start <= 20 for p in plans)
    os.remove(plans[0].shard_path)
    os.remove(plans[3].shard_path)
    raw = bytearray(open(plans[2].shard_path, "rb").read())
    raw[len(raw) // 2] ^= 0xFF  # inside the array data
    open(plans[2].shard_path, "wb").write(bytes(raw))
    resumed, second = chunked_matrix(toy_state, chunk_dir, 20, resume=True, chunk_plan=plan_kind)
    resume_plan = resumed.classify()
    assert not resume_plan.todo
    assert_same(first, second)
    assert_same(first, full_matrix(toy_state))
    counts = {cid: rec.attempts for cid, rec in ChunkManifest.load(chunk_dir / "chunk_manifest.json").chunks.items()}
    assert counts == {p.chunk_id: 2 if p.chunk_id in (0, 2, 3) else 1 for p in plans}


def test_assembly_refuses_shards_of_another_lineage(toy_state, tmp_path):
    """Two runs on one chunk directory: shards another build wrote must not enter this matrix."""
    from policyengine_us_data.errors import ArtifactError

    assembler, _ = chunked_matrix(toy_state, tmp_path / "chunks", 20)
    assembler.signature = "another-run"  # the shards on disk are now another build's
    every = ", ".join(str(chunk.chunk_id) for chunk in assembler.plans())
    with pytest.raises(ArtifactError, match=rf"chunk\(s\) {every} carry another build's lineage"):
        assembler.assemble()


def test_changed_chunk_size_refuses_stale_shards(toy_state, tmp_path):
    chunk_dir = tmp_path / "chunks"
    chunked_matrix(toy_state, chunk_dir, 20)
    with pytest.raises(LineageMismatch, match="chunk_size: 20 -> 25"):
        chunked_matrix(toy_state, chunk_dir, 25, resume=True)


@pytest.mark.parametrize("which", ["range", "one state", "every third"])
def test_takeup_draws_do_not_depend_on_chunking(toy_state, which):
    """A column's draws are the same in the whole matrix, a column range and a scattered column set."""
    inputs = load_build_state(toy_state)
    from policyengine_us_data.calibration.entity_clone import materialise_columns

    state = inputs.geography.state_fips[0]
    columns = {"range": np.arange(37, 61), "every third": np.arange(1, inputs.n_columns, 3),
               "one state": np.flatnonzero(inputs.geography.state_fips == state)}[which]
    whole = materialise_columns(inputs.data, inputs.geography, np.arange(inputs.n_columns), rerandomize_takeup=True)
    part = materialise_columns(inputs.data, inputs.geography, columns, rerandomize_takeup=True)
    for name in ("takes_up_snap_if_eligible", "takes_up_medicaid_if_eligible", "takes_up_eitc"):
        if name == "takes_up_medicaid_if_eligible":
            hh = whole.person_entity_index("household")
        else:
            hh = whole.entity_household_index("spm_unit" if "snap" in name else "tax_unit")
        sel = np.isin(hh, columns)
        assert sel.sum() == len(part.arrays[name]) > 0
        np.testing.assert_array_equal(whole.arrays[name][sel], part.arrays[name])
