"""HouseholdData structure lookups and entity classification."""

from __future__ import annotations

import numpy as np
import pytest

from policyengine_us_data.datasets.household_data import ENTITIES, HouseholdData
from policyengine_us_data.errors import DatasetError

from .conftest import random_structure


def test_indices_match_ids():
    data = random_structure(np.random.default_rng(3), 30)
    a = data.arrays
    for entity in ENTITIES:
        index = data.person_entity_index(entity)
        assert index.dtype == np.int64
        np.testing.assert_array_equal(a[f"{entity}_id"][index], a[f"person_{entity}_id"])
        households = data.entity_household_index(entity)
        assert len(households) == data.n_entities(entity)
        person_hh = data.person_entity_index("household")
        np.testing.assert_array_equal(households[index], person_hh)


def test_counts_and_entity_of():
    data = random_structure(np.random.default_rng(4), 10)
    assert data.n_households == 10 and data.n_persons == len(data.arrays["person_id"])
    assert data.entity_of("age") == "person"
    assert data.entity_of("tax_unit_weight") == "tax_unit"


def test_ambiguous_and_unmatched_lengths():
    arrays = {"person_id": np.arange(2), "mystery": np.zeros(2), "odd": np.zeros(5)}
    for entity in ENTITIES:
        arrays[f"{entity}_id"] = np.arange(2)
        arrays[f"person_{entity}_id"] = np.arange(2)
    data = HouseholdData(arrays, 2024)
    with pytest.raises(DatasetError, match="'mystery' has length 2, shared by entities"):
        data.entity_of("mystery")
    with pytest.raises(DatasetError, match="'odd' has length 5, which matches no entity"):
        data.entity_of("odd")
    resolved = HouseholdData(arrays, 2024, {"mystery": "family"})
    assert resolved.entity_of("mystery") == "family"
    arrays["marital_unit_id"] = np.arange(3)
    arrays["person_id"] = arrays["person_marital_unit_id"] = np.arange(3)
    for entity in ENTITIES[:-1]:
        arrays[f"person_{entity}_id"] = np.array([0, 0, 1])
    arrays["by_length"] = np.zeros(3)
    with pytest.raises(DatasetError, match="shared by entities \\['person', 'marital_unit'\\]"):
        HouseholdData(arrays, 2024).entity_of("by_length")
    del arrays["marital_unit_id"]
    arrays["marital_unit_id"] = np.arange(2)
    arrays["person_marital_unit_id"] = np.array([0, 0, 1])
    assert HouseholdData(arrays, 2024).entity_of("by_length") == "person"


def test_unknown_entity_rejected():
    data = random_structure(np.random.default_rng(5), 3)
    with pytest.raises(ValueError, match="unknown entity"):
        data.person_entity_index("benefit_unit")
