"""Entities come from the file's metadata or the simulator, never from array lengths (issue 14)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from policyengine_us_data.datasets.h5io import read_dataset, write_dataset
from policyengine_us_data.datasets.select import select_households
from policyengine_us_data.errors import DatasetError
from tests.support.toy_simulator import ToySimulator
from tests.support.upstream_fixture import upstream_arrays, write_upstream_dataset

TOY_ENTITIES = {**ToySimulator().variable_entities(), "spm_unit_spm_threshold": "spm_unit"}


def test_coinciding_entity_counts_read_and_subset_with_the_simulators_entities(tmp_path) -> None:
    """Upstream's fixture shape: 50 households, tax units, SPM units and families; snap on SPM units."""
    data = read_dataset(write_upstream_dataset(tmp_path / "f.h5"), variable_entities=TOY_ENTITIES)
    assert {data.n_entities(e) for e in ("household", "tax_unit", "spm_unit", "family")} == {50}
    assert data.entity_of("snap") == "spm_unit"
    subset = select_households(data, np.array([0, 0, 5]))  # raised "its entity is ambiguous" before
    np.testing.assert_array_equal(subset.arrays["snap"], data.arrays["snap"][[0, 0, 5]])


def test_a_variable_the_simulator_does_not_know_is_named(tmp_path) -> None:
    arrays = upstream_arrays()
    arrays["mystery_input"] = arrays["snap"]
    path = write_upstream_dataset(tmp_path / "f.h5", arrays)
    with pytest.raises(DatasetError, match="unknown to the simulator.*'mystery_input'"):
        read_dataset(path, variable_entities=TOY_ENTITIES)


def test_our_files_carry_their_entities_and_read_back_without_policyengine_us(tmp_path) -> None:
    imported_before = "policyengine_us" in sys.modules
    data = read_dataset(write_upstream_dataset(tmp_path / "f.h5"), variable_entities=TOY_ENTITIES)
    write_dataset(tmp_path / "ours.h5", data)
    back = read_dataset(tmp_path / "ours.h5")  # no mapping: the file's own metadata answers
    assert back.entity_of("snap") == "spm_unit" and back.entity_of("spm_unit_spm_threshold") == "spm_unit"
    assert imported_before or "policyengine_us" not in sys.modules


def test_metadata_naming_no_entity_is_refused(tmp_path) -> None:
    import h5py

    path = write_upstream_dataset(tmp_path / "f.h5")
    with h5py.File(path, "a") as handle:
        n_households = handle["household_id"]["2023"].shape[0]
        handle.create_dataset("local_levy/2023", data=[1.0] * n_households)
        handle["local_levy"].attrs["entity"] = "county"  # a variable only the file's metadata can place
    with pytest.raises(DatasetError, match="'local_levy' is on entity 'county'"):
        read_dataset(path, variable_entities=TOY_ENTITIES)


def test_the_mapping_wins_over_the_files_metadata(tmp_path) -> None:
    """Metadata is read only for names nothing else places (reading attributes of a damaged file can hang)."""
    import h5py

    path = write_upstream_dataset(tmp_path / "f.h5")
    with h5py.File(path, "a") as handle:
        handle["snap"].attrs["entity"] = "county"
    assert read_dataset(path, variable_entities=TOY_ENTITIES).entities["snap"] == TOY_ENTITIES["snap"]
