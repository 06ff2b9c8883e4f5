"""Upstream's chunked-builder callers, run unchanged against the project with the real policyengine-us.

Written from upstream's documented behaviour (its `build_matrix_chunked` integration tests): an upstream-shaped
fixture (tests/support/upstream_fixture.py), its `GeographyAssignment` of string arrays, its target database
with the `target_overview` view, and the three `entity_clone` seams patched the way its tests patch them.
One chunked build (5 chunks of 20 columns) and one non-chunked build are shared by the module; the resume,
lineage and range tests reuse copies of that chunk directory and compute nothing.
"""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pytest

from policyengine_us_data.calibration.clone_and_assign import GeographyAssignment
from policyengine_us_data.calibration.unified_matrix_builder import UnifiedMatrixBuilder
from policyengine_us_data.datasets.h5io import read_dataset
from policyengine_us_data.errors import DatasetError
from tests.support.upstream_fixture import (
    PERIOD,
    upstream_arrays,
    upstream_geography,
    write_upstream_dataset,
    write_upstream_target_db,
)

N_RECORDS = 50
CALLS: dict[str, int] = {}


def _fake_geography_from_blocks(blocks):
    CALLS["derive_geography_from_blocks"] = CALLS.get("derive_geography_from_blocks", 0) + 1
    blocks = np.asarray(blocks, dtype=str)
    return {"state_fips": np.array([int(b[:2]) for b in blocks], dtype=np.int32),
            "county_fips": np.array([b[:5] for b in blocks], dtype="U5"), "block_geoid": blocks}


def _patch_seams(patch: pytest.MonkeyPatch) -> None:
    """As upstream's tests do, by dotted path on `calibration.entity_clone`."""
    module = "policyengine_us_data.calibration.entity_clone"
    patch.setattr(f"{module}.derive_geography_from_blocks", _fake_geography_from_blocks)
    patch.setattr(f"{module}.load_cd_geoadj_values", lambda cds: {cd: 1.0 for cd in cds})
    patch.setattr(f"{module}.calculate_spm_thresholds_vectorized",
                  lambda **kwargs: np.ones(len(kwargs["spm_unit_tenure_types"]), dtype=np.float32))


@pytest.fixture(scope="module")
def upstream(tmp_path_factory, pe_simulator):
    """Both builds on the upstream-shaped inputs, with the seams patched throughout."""
    root = tmp_path_factory.mktemp("upstream")
    dataset = write_upstream_dataset(root / "test_fixture_50hh.h5")
    db_uri = write_upstream_target_db(root / "policy_data.db")
    geography = upstream_geography(N_RECORDS)
    with pytest.MonkeyPatch.context() as patch:
        _patch_seams(patch)
        builder = UnifiedMatrixBuilder(db_uri=db_uri, time_period=PERIOD, dataset_path=str(dataset))
        expected = builder.build_matrix(geography=geography, sim=None, rerandomize_takeup=False, workers=1)
        chunked = builder.build_matrix_chunked(geography=geography, sim=None, chunk_size=20,
                                               chunk_dir=str(root / "chunks"), rerandomize_takeup=False)
    return {"root": root, "builder": builder, "geography": geography, "expected": expected, "chunked": chunked,
            "chunks": root / "chunks"}


def test_the_fixture_reads_with_entities_from_policyengine_us(tmp_path, pe_system) -> None:
    data = read_dataset(write_upstream_dataset(tmp_path / "f.h5"))
    assert {data.n_entities(e) for e in ("household", "tax_unit", "spm_unit", "family")} == {50}
    assert data.n_persons == 97
    assert data.entity_of("snap") == pe_system.variables["snap"].entity.key == "spm_unit"
    assert data.entity_of("age") == "person"  # 97 marital units: person and marital_unit counts coincide too


def test_a_variable_unknown_to_policyengine_us_is_named(tmp_path, pe_system) -> None:
    arrays = upstream_arrays()
    arrays["snap_reported_typo"] = arrays["snap"]
    with pytest.raises(DatasetError, match="unknown to policyengine-us.*'snap_reported_typo'"):
        read_dataset(write_upstream_dataset(tmp_path / "f.h5", arrays))


def test_chunked_equals_non_chunked_with_upstreams_geography(upstream) -> None:
    import pandas as pd

    (e_targets, e_matrix, e_names), (c_targets, c_matrix, c_names) = upstream["expected"], upstream["chunked"]
    assert c_names == e_names
    pd.testing.assert_frame_equal(c_targets, e_targets)
    np.testing.assert_array_equal(c_matrix.toarray(), e_matrix.toarray())
    sums = {name: c_matrix[i].sum() for i, name in enumerate(c_names)}
    assert sums["national/household_count"] == 2 * N_RECORDS
    assert sums["cd_3701/household_count"] == N_RECORDS
    assert sums["state_35/household_count"] == N_RECORDS
    assert c_matrix.shape == (6, 2 * N_RECORDS)
    aca = [i for i, name in enumerate(c_names) if name.startswith("national/aca_ptc")]
    assert c_matrix[aca[0]].nnz > 0  # the aca_ptc rows hold real credits, not an empty matrix
    assert CALLS.get("derive_geography_from_blocks", 0) >= 5  # the patched seam was the one called
    assert sorted(p.name for p in (upstream["chunks"] / "coo").glob("chunk_*.npz")) == [
        f"chunk_{i:06d}.npz" for i in range(5)]  # kept under chunk_dir/coo/ although keep_chunks=False


def test_resume_reuses_the_shards(upstream, tmp_path) -> None:
    chunks = tmp_path / "chunks"
    shutil.copytree(upstream["chunks"], chunks)
    before = {p.name: os.stat(p) for p in (chunks / "coo").glob("chunk_*.npz")}
    _, matrix, names = upstream["builder"].build_matrix_chunked(
        geography=upstream["geography"], chunk_size=20, chunk_dir=str(chunks), resume_chunks=True,
        rerandomize_takeup=False)
    after = {p.name: os.stat(p) for p in (chunks / "coo").glob("chunk_*.npz")}
    assert {n: (s.st_ino, s.st_mtime_ns) for n, s in after.items()} == {
        n: (s.st_ino, s.st_mtime_ns) for n, s in before.items()}
    np.testing.assert_array_equal(matrix.toarray(), upstream["chunked"][1].toarray())


def test_resume_after_a_lineage_change_is_refused(upstream, tmp_path) -> None:
    chunks = tmp_path / "chunks"
    shutil.copytree(upstream["chunks"], chunks)
    with pytest.raises(ValueError, match="Chunk cache lineage mismatch.*chunk_size: 20 -> 40"):
        upstream["builder"].build_matrix_chunked(
            geography=upstream["geography"], chunk_size=40, chunk_dir=str(chunks), resume_chunks=True,
            rerandomize_takeup=False)


def test_resume_refuses_a_shard_covering_other_columns(upstream, tmp_path) -> None:
    chunks = tmp_path / "chunks"
    shutil.copytree(upstream["chunks"], chunks)
    cached = chunks / "coo" / "chunk_000000.npz"
    with np.load(cached) as data:  # upstream's test rewrites the shard this way
        rows, cols, vals, col_end = data["rows"], data["cols"], data["vals"], data["col_end"]
    np.savez_compressed(cached, rows=rows, cols=cols, vals=vals, col_start=np.array([1], dtype=np.int64),
                        col_end=col_end)
    with pytest.raises(ValueError, match="covers cols 1-19, expected 0-19"):
        upstream["builder"].build_matrix_chunked(
            geography=upstream["geography"], chunk_size=20, chunk_dir=str(chunks), resume_chunks=True,
            rerandomize_takeup=False)


def test_inputs_policyengine_us_refuses_are_dropped_with_a_warning(upstream, caplog) -> None:
    caplog.set_level(logging.WARNING)
    upstream["builder"].prepare_state(upstream["geography"], rerandomize_takeup=False)
    assert "spm_unit_spm_threshold" in caplog.text
    assert "spm_unit_spm_threshold" not in read_dataset(upstream["builder"].work_dir / "state" / "dataset.h5").arrays


def test_integer_geography_arrays_convert_to_the_same_geography(upstream) -> None:
    g = upstream["geography"]
    ints = GeographyAssignment(block_geoid=g.block_geoid.astype(np.int64), cd_geoid=g.cd_geoid.astype(np.int64),
                               county_fips=g.county_fips.astype(np.int64), state_fips=g.state_fips,
                               n_records=g.n_records, n_clones=g.n_clones)
    assert ints.to_clone_geography().cd_geoid.tolist() == g.to_clone_geography().cd_geoid.tolist()
    assert ints.to_clone_geography().block_geoid.tolist() == g.to_clone_geography().block_geoid.tolist()
