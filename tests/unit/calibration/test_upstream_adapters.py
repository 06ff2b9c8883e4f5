"""Upstream's public surface as adapters: GeographyAssignment, the target_overview view, the entity_clone
seams, refused inputs, and the chunk-directory messages (hermetic; tests/integration/test_upstream_compat.py
repeats the builder behaviour with the real policyengine-us)."""

from __future__ import annotations

import logging
import sqlite3

import numpy as np
import pytest

from policyengine_us_data.calibration import entity_clone
from policyengine_us_data.kernel.build_state import drop_inputs
from policyengine_us_data.shards.chunk_plan import ChunkPlan
from policyengine_us_data.calibration.clone_and_assign import (
    as_clone_geography,
    assign_random_geography,
)
from policyengine_us_data.datasets.geography import derive_geography_from_blocks
from policyengine_us_data.shards.shards import write_shard
from policyengine_us_data.kernel.spm_thresholds import calculate_spm_thresholds_vectorized, load_cd_geoadj_values
from policyengine_us_data.targets.targets import load_targets
from policyengine_us_data.compat.upstream_chunk_cache import refuse_misplaced_shards
from policyengine_us_data.datasets.h5io import read_dataset
from policyengine_us_data.errors import InputError, LineageMismatch
from tests.support.toy_simulator import ToySimulator
from tests.support.upstream_fixture import upstream_geography, write_upstream_dataset, write_upstream_target_db

TOY_ENTITIES = {**ToySimulator().variable_entities(), "spm_unit_spm_threshold": "spm_unit"}


def test_a_geography_assignment_of_strings_converts_once_to_ours() -> None:
    geography = as_clone_geography(upstream_geography(3))
    assert geography.cd_geoid.tolist() == [3701] * 3 + [3502] * 3
    assert geography.county_fips.tolist() == [37183] * 3 + [35013] * 3
    assert geography.state_fips.tolist() == [37] * 3 + [35] * 3
    assert geography.block_geoid[0] == "371830501001001" and geography.n_columns == 6


@pytest.mark.parametrize("field, value, message", [
    ("cd_geoid", np.array(["3701", "3701", "3701", "3502", "3502"]), "geography.cd_geoid has length 5, expected 6"),
    ("county_fips", np.array(["37183"] * 3 + ["36061"] * 3), "county_fips lies outside its column's state"),
    ("block_geoid", np.array(["371830501001001"] * 3 + ["350130001"] * 3), "not a 15-digit block"),
    ("block_geoid", np.array(["371830501001001"] * 3 + ["350150001001001"] * 3), "outside its column's county"),
    ("cd_geoid", np.array(["3701"] * 3 + ["NM-2"] * 3), "'NM-2', not a numeric code"),
])
def test_a_bad_geography_assignment_names_the_field(field, value, message) -> None:
    geography = upstream_geography(3)
    setattr(geography, field, value)
    with pytest.raises(InputError, match=message):
        as_clone_geography(geography)


def test_upstreams_random_geography_round_trips() -> None:
    ours = assign_random_geography(20, n_clones=3, seed=1).to_clone_geography()
    assert ours.n_columns == 60 and (ours.county_fips == -1).all() and (ours.cd_geoid // 100 == ours.state_fips).all()


def test_the_target_overview_view_and_the_loader_read_upstreams_database(tmp_path) -> None:
    uri = write_upstream_target_db(tmp_path / "db.sqlite")
    with sqlite3.connect(tmp_path / "db.sqlite") as connection:
        overview = connection.execute("SELECT variable, geo_level, geographic_id FROM target_overview").fetchall()
    assert overview[:3] == [("household_count", "national", "US"), ("household_count", "district", "3701"),
                            ("household_count", "state", "35")]
    names = [row.name for row in load_targets(uri[len("sqlite:///"):], 2023).rows]
    assert "cd_3701/household_count" in names and "state_35/aca_ptc/[aca_ptc>0]" in names


def test_the_entity_clone_seams_are_called_through_the_module(tmp_path, monkeypatch) -> None:
    calls = []

    def fake_blocks(blocks):
        calls.append(("blocks", len(blocks)))
        return derive_geography_from_blocks(blocks)

    def fake_thresholds(**kwargs):
        calls.append(("spm", len(kwargs["spm_unit_tenure_types"])))
        return np.full(len(kwargs["spm_unit_tenure_types"]), 7.0, dtype=np.float32)

    monkeypatch.setattr("policyengine_us_data.calibration.entity_clone.derive_geography_from_blocks", fake_blocks)
    monkeypatch.setattr("policyengine_us_data.calibration.entity_clone.load_cd_geoadj_values",
                        lambda cds: {cd: 1.0 for cd in cds})
    monkeypatch.setattr("policyengine_us_data.calibration.entity_clone.calculate_spm_thresholds_vectorized",
                        fake_thresholds)
    base = read_dataset(write_upstream_dataset(tmp_path / "f.h5"), variable_entities=TOY_ENTITIES)
    chunk = entity_clone.materialise_columns(base, as_clone_geography(upstream_geography(50)), np.arange(40, 60))
    assert calls == [("blocks", 2), ("spm", 20)]
    assert chunk.arrays["county_fips"].tolist() == ["37183"] * 10 + ["35013"] * 10
    assert (chunk.arrays["spm_unit_spm_threshold"] == 7.0).all()
    assert chunk.entity_of("snap") == "spm_unit"  # carried, not guessed from 20 coinciding counts


def test_the_real_spm_seams_scale_thresholds_by_district_rents() -> None:
    adjustments = load_cd_geoadj_values(["3701", "601"])
    assert adjustments["3701"]["renter"] != adjustments["601"]["renter"]
    from spm_calculator.published_thresholds import get_published_thresholds

    thresholds = calculate_spm_thresholds_vectorized(
        person_ages=np.array([40, 38, 10, 8, 40, 38, 10, 8, 15]), person_spm_unit_ids=np.array([0] * 4 + [1] * 4 + [2]),
        spm_unit_tenure_types=np.array([b"RENTER", b"RENTER", b"OWNER_WITH_MORTGAGE"]),
        spm_unit_geoadj=np.array([1.0, 1.2, 1.0]), year=2023)
    reference = get_published_thresholds(2023)["renter"]  # two adults, two children: scale 1
    assert thresholds[0] == pytest.approx(reference, rel=1e-6)
    assert thresholds[1] == pytest.approx(1.2 * reference, rel=1e-6)
    assert 0 < thresholds[2] < get_published_thresholds(2023)["owner_with_mortgage"]  # one member alone


def test_refused_inputs_are_dropped_with_a_warning_naming_them(tmp_path, caplog) -> None:
    base = read_dataset(write_upstream_dataset(tmp_path / "f.h5"), variable_entities=TOY_ENTITIES)
    caplog.set_level(logging.WARNING)
    kept = drop_inputs(base, frozenset({"spm_unit_spm_threshold", "in_poverty"}))
    assert "spm_unit_spm_threshold" not in kept.arrays and "snap" in kept.arrays
    assert "spm_unit_spm_threshold" in caplog.text and "in_poverty" not in caplog.text


def test_lineage_mismatch_starts_with_upstreams_phrase() -> None:
    error = LineageMismatch(["chunk_size: 20 -> 40"], where="chunks/coo/chunk_manifest.json")
    assert isinstance(error, ValueError)
    assert str(error).startswith("Chunk cache lineage mismatch for chunks/coo/chunk_manifest.json: ")
    assert "chunk_size: 20 -> 40" in str(error)


def test_a_shard_covering_other_columns_is_refused_in_either_format(tmp_path) -> None:
    plan = ChunkPlan(0, 0, 20, str(tmp_path / "chunk_000000.npz"), "sig")
    write_shard(plan.shard_path, [0], [3], [1.0], chunk_id=0, col_start=0, col_end=20, n_rows=2, n_cols=100,
                lineage_signature="sig")
    refuse_misplaced_shards([plan])  # ours, in place: accepted
    with np.load(plan.shard_path) as data:  # upstream's members are there for upstream's callers
        assert int(data["col_start"][0]) == 0 and int(data["col_end"][0]) == 20
    np.savez_compressed(plan.shard_path, rows=np.array([0]), cols=np.array([3]), vals=np.array([1.0]),
                        col_start=np.array([1]), col_end=np.array([20]))
    with pytest.raises(ValueError, match="covers cols 1-19, expected 0-19"):
        refuse_misplaced_shards([plan])
    write_shard(plan.shard_path, [0], [25], [1.0], chunk_id=1, col_start=20, col_end=40, n_rows=2, n_cols=100,
                lineage_signature="sig")
    with pytest.raises(InputError, match="covers cols 20-39, expected 0-19"):
        refuse_misplaced_shards([plan])


def test_columns_without_a_known_county_get_an_empty_one(tmp_path) -> None:
    geography = upstream_geography(50)
    geography.block_geoid[50:] = ""
    geography.county_fips[50:] = ""
    base = read_dataset(write_upstream_dataset(tmp_path / "f.h5"), variable_entities=TOY_ENTITIES)
    chunk = entity_clone.materialise_columns(base, as_clone_geography(geography), np.arange(45, 55))
    assert chunk.arrays["county_fips"].tolist() == ["37183"] * 5 + [""] * 5
    assert chunk.arrays["block_geoid"].tolist() == ["371830501001001"] * 5 + [""] * 5
    ours = entity_clone.materialise_columns(base, assign_random_geography(50, 2).to_clone_geography(), np.arange(0, 10))
    assert "county_fips" not in ours.arrays  # the project's own geography knows no counties: nothing written
