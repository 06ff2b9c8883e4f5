"""`build_matrix_chunked` with upstream's inputs and chunk-directory rules, on the toy simulator (fast twin of
tests/integration/test_upstream_compat.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from policyengine_us_data.calibration.unified_matrix_builder import UnifiedMatrixBuilder
from tests.support.upstream_fixture import (
    PERIOD,
    upstream_arrays,
    upstream_geography,
    write_upstream_dataset,
    write_upstream_target_db,
)

TOY = "tests.support.toy_simulator:ToySimulator"


@pytest.fixture()
def builder(tmp_path) -> UnifiedMatrixBuilder:
    arrays = upstream_arrays()
    del arrays["spm_unit_spm_threshold"]  # the toy simulator does not know it
    dataset = write_upstream_dataset(tmp_path / "fixture.h5", arrays)
    uri = write_upstream_target_db(tmp_path / "policy_data.db")
    return UnifiedMatrixBuilder(db_uri=uri, time_period=PERIOD, dataset_path=dataset, work_dir=tmp_path / "work",
                                simulator=TOY)


def chunked(builder, chunks, **kwargs):
    options = dict(chunk_size=20, chunk_dir=str(chunks), rerandomize_takeup=False) | kwargs
    return builder.build_matrix_chunked(upstream_geography(50), **options)


def test_chunked_equals_non_chunked_and_shards_stay_under_coo(builder, tmp_path) -> None:
    _, expected, names = builder.build_matrix(upstream_geography(50), rerandomize_takeup=False)
    _, matrix, chunked_names = chunked(builder, tmp_path / "chunks")
    assert chunked_names == names
    np.testing.assert_array_equal(matrix.toarray(), expected.toarray())
    assert matrix[names.index("cd_3701/household_count")].sum() == 50
    assert matrix[names.index("national/aca_ptc/[aca_ptc>0]")].nnz > 0
    assert len(list((tmp_path / "chunks" / "coo").glob("chunk_*.npz"))) == 5  # kept: keep_chunks=False


def test_without_chunk_dir_the_shards_go_unless_kept(builder) -> None:
    chunked(builder, None, chunk_dir=None)
    assert not list((builder.work_dir / "matrix_chunks").glob("chunk_*.npz"))


def test_resume_reuses_shards_and_refuses_other_lineage_or_ranges(builder, tmp_path) -> None:
    chunks = tmp_path / "chunks"
    _, first, _ = chunked(builder, chunks)
    stats = {p.name: os.stat(p).st_mtime_ns for p in (chunks / "coo").glob("chunk_*.npz")}
    _, again, _ = chunked(builder, chunks, resume_chunks=True)
    assert {p.name: os.stat(p).st_mtime_ns for p in (chunks / "coo").glob("chunk_*.npz")} == stats
    np.testing.assert_array_equal(again.toarray(), first.toarray())
    with pytest.raises(ValueError, match="Chunk cache lineage mismatch.*chunk_size: 20 -> 40"):
        chunked(builder, chunks, chunk_size=40, resume_chunks=True)
    shard = chunks / "coo" / "chunk_000002.npz"
    with np.load(shard) as data:
        np.savez_compressed(shard, rows=data["rows"], cols=data["cols"], vals=data["vals"],
                            col_start=np.array([41]), col_end=data["col_end"])
    with pytest.raises(ValueError, match="chunk_000002.npz covers cols 41-59, expected 40-59"):
        chunked(builder, chunks, resume_chunks=True)
