"""The chunked build with the real policyengine-us (issue 4's correctness list).

Fixture: 50 synthetic households x 2 clones, chunk size 20 (the default state-major plan: 6 chunks, each
holding columns of both clones), targets exercising every cell rule at every geo level plus a reform row.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from policyengine_us_data.kernel.build_state import load_build_state, write_build_state
from policyengine_us_data.dispatch import LocalChunkDispatcher
from policyengine_us_data.kernel.chunk_kernel import compute_entries
from policyengine_us_data.dispatch.chunked_matrix_assembler import ChunkedMatrixAssembler
from policyengine_us_data.datasets.geography import assign_geography
from policyengine_us_data.shards.lineage import ChunkManifest
from policyengine_us_data.targets.targets import load_targets
from policyengine_us_data.calibration.unified_matrix_builder import reference_csr
from policyengine_us_data.datasets.synthetic import generate_synthetic
from policyengine_us_data.errors import LineageMismatch
from tests.support.expected_cells import expected_cells
from tests.support.target_db import every_rule_targets, make_target_db

N_RECORDS, N_CLONES = 50, 2


def assert_same(a, b) -> None:
    assert a.shape == b.shape
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data, b.data)


@pytest.fixture(scope="module")
def real_state(tmp_path_factory, pe_simulator):
    root = tmp_path_factory.mktemp("real")
    data = generate_synthetic(N_RECORDS, seed=11)
    geography = assign_geography(N_RECORDS, N_CLONES, seed=5)
    states = sorted({int(s) for s in geography.state_fips[:6]})
    districts = sorted({int(d) for d in geography.cd_geoid[:4]})
    db = make_target_db(root / "targets.db", every_rule_targets(states, districts))
    table = load_targets(db, 2024, known_variables=pe_simulator.known_variables())
    state_dir = root / "state"
    write_build_state(state_dir, data=data, geography=geography, targets=table, year=2024, rerandomize_takeup=True)
    return state_dir


@pytest.fixture(scope="module")
def reference(real_state):
    """The non-chunked matrix: one simulation of all 100 columns."""
    inputs = load_build_state(real_state)
    e = compute_entries(inputs, np.arange(inputs.n_columns))
    return reference_csr(e.rows, e.cols, e.vals, (inputs.n_rows, inputs.n_columns))


def chunked(state_dir, chunk_dir, chunk_size, resume=True):
    assembler = ChunkedMatrixAssembler(state_dir, chunk_dir, chunk_size=chunk_size, resume=resume,
                                       dispatcher=LocalChunkDispatcher(workers=1), progress=False)
    return assembler, assembler.build()


@pytest.fixture(scope="module")
def chunks20(real_state, tmp_path_factory):
    chunk_dir = tmp_path_factory.mktemp("chunks20")
    assembler, matrix = chunked(real_state, chunk_dir, 20)
    return assembler, matrix, chunk_dir


def test_chunked_equals_non_chunked(chunks20, reference):
    assembler, matrix, _ = chunks20
    plans = assembler.plans()
    assert len(plans) >= 5 and {p.kind for p in plans} == {"state"}
    assert all(assembler.columns(p)[0] < N_RECORDS <= assembler.columns(p)[-1] for p in plans)  # both clones
    assert_same(matrix, reference)
    assert reference.nnz > 0


@pytest.mark.parametrize("chunk_size", [33, 100])
def test_same_matrix_for_other_chunk_sizes(real_state, reference, tmp_path, chunk_size):
    """33: boundaries at odd columns, one chunk across the clone boundary (50), a last chunk of one column."""
    _, matrix = chunked(real_state, tmp_path / "chunks", chunk_size)
    assert_same(matrix, reference)


def test_cells_match_a_direct_simulation_of_each_household(real_state, reference, pe_simulator):
    inputs = load_build_state(real_state)
    reform_rows = [row.row for row in inputs.targets.rows if row.reform_id > 0]
    reform_cols = reference[reform_rows].nonzero()[1]
    assert len(reform_cols), "no household has a non-zero reform cell: the fixture needs one"
    columns = sorted({0, 13, 49, 50, 77, 99, int(reform_cols[0])})
    expected = expected_cells(inputs.data, inputs.geography, inputs.targets, pe_simulator, columns, takeup=True)
    coo = reference.tocoo()
    wanted = set(columns)
    got = {(int(r), int(c)): v for r, c, v in zip(coo.row, coo.col, coo.data) if int(c) in wanted}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-3), inputs.targets.rows[key[0]].name
    rows_hit = {inputs.targets.rows[r] for r, _ in got}
    assert {r.geo_level for r in rows_hit} >= {"national", "state"}
    assert any(r.reform_id > 0 for r in rows_hit)


def test_resume_recomputes_only_the_damaged_chunks(chunks20, reference, tmp_path):
    _, _, source = chunks20
    chunk_dir = tmp_path / "chunks"
    shutil.copytree(source, chunk_dir)
    os.remove(chunk_dir / "chunk_000001.npz")
    os.remove(chunk_dir / "chunk_000004.npz")
    raw = bytearray((chunk_dir / "chunk_000002.npz").read_bytes())
    raw[len(raw) // 2] ^= 0x55
    (chunk_dir / "chunk_000002.npz").write_bytes(bytes(raw))
    before = {cid: rec.attempts for cid, rec in ChunkManifest.load(chunk_dir / "chunk_manifest.json").chunks.items()}
    assembler, matrix = chunked(chunks20[0].state_dir, chunk_dir, 20)
    after = {cid: rec.attempts for cid, rec in ChunkManifest.load(chunk_dir / "chunk_manifest.json").chunks.items()}
    recomputed = sorted(cid for cid in after if after[cid] != before.get(cid))
    assert recomputed == [1, 2, 4]
    assert_same(matrix, reference)


def test_changed_inputs_make_resume_refuse_stale_shards(chunks20, real_state, tmp_path):
    _, _, source = chunks20
    chunk_dir = tmp_path / "chunks"
    shutil.copytree(source, chunk_dir)
    with pytest.raises(LineageMismatch, match="chunk_size: 20 -> 30"):
        ChunkedMatrixAssembler(real_state, chunk_dir, chunk_size=30).open_manifest()
    inputs = load_build_state(real_state)
    changed = tmp_path / "state2"
    data = inputs.data.replace_arrays(age=inputs.data.arrays["age"] + 1)
    write_build_state(changed, data=data, geography=inputs.geography, targets=inputs.targets, year=2024,
                      rerandomize_takeup=True)
    with pytest.raises(LineageMismatch, match="dataset_sha256"):
        ChunkedMatrixAssembler(changed, chunk_dir, chunk_size=20).open_manifest()
