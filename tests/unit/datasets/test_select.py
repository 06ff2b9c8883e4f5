"""select_households against a brute-force per-household loop, plus structure and speed checks."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policyengine_us_data.datasets.h5io import validate_arrays
from policyengine_us_data.datasets.household_data import ENTITIES, HouseholdData
from policyengine_us_data.datasets.select import select_households
from policyengine_us_data.datasets.synthetic import generate_synthetic
from policyengine_us_data.errors import DatasetError

from .conftest import random_structure


def brute_force(data: HouseholdData, positions) -> dict[str, list]:
    """Per selected household, in order: its persons' rows and its sub-entities' rows, by original order."""
    a = data.arrays
    expected: dict[str, list] = {"person": [], **{e: [] for e in ENTITIES}}
    person_rows = np.arange(data.n_persons)
    for k, pos in enumerate(positions):
        hh_id = a["household_id"][pos]
        members = [p for p in person_rows if a["person_household_id"][p] == hh_id]
        expected["person"].extend(members)
        expected["household"].append(pos)
        for entity in ENTITIES[1:]:
            ids = {a[f"person_{entity}_id"][p] for p in members}
            rows = sorted(int(np.flatnonzero(a[f"{entity}_id"] == i)[0]) for i in ids)
            expected[entity].extend(rows)
    return expected


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 12), picks=st.lists(st.integers(0, 11), max_size=15))
def test_matches_brute_force(seed, n, picks):
    data = random_structure(np.random.default_rng(seed), n)
    positions = np.array([p % n for p in picks], dtype=np.int64)
    out = select_households(data, positions)
    expected = brute_force(data, positions)
    for entity in ("person",) + ENTITIES:
        count = len(expected[entity])
        assert out.n_entities(entity) == count
        np.testing.assert_array_equal(out.arrays[f"{entity}_id"], np.arange(count))
        weight = "age" if entity == "person" else f"{entity}_weight"
        source = data.arrays[weight][np.array(expected[entity], dtype=np.int64)]
        np.testing.assert_array_equal(out.arrays[weight], source)
    np.testing.assert_array_equal(
        out.arrays["employment_income_before_lsr"],
        data.arrays["employment_income_before_lsr"][np.array(expected["person"], dtype=np.int64)],
    )
    if out.n_persons:
        validate_arrays(out.arrays, "selected")
        assert np.all(np.diff(out.arrays["person_household_id"]) >= 0)
    assert list(out.arrays) == list(data.arrays)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 10), picks=st.lists(st.integers(0, 9), min_size=1, max_size=12))
def test_membership_preserved(seed, n, picks):
    """Two persons share a new sub-entity iff they share the new household and shared the old sub-entity."""
    data = random_structure(np.random.default_rng(seed), n)
    positions = np.array([p % n for p in picks])
    out = select_households(data, positions)
    person_src = np.concatenate([brute_force(data, [p])["person"] for p in positions]).astype(np.int64)
    for entity in ENTITIES[1:]:
        old = data.arrays[f"person_{entity}_id"][person_src]
        new = out.arrays[f"person_{entity}_id"]
        hh = out.arrays["person_household_id"]
        same_new = new[:, None] == new[None, :]
        same_old = (old[:, None] == old[None, :]) & (hh[:, None] == hh[None, :])
        np.testing.assert_array_equal(same_new, same_old)
        assert np.all(np.diff(out.entity_household_index(entity)) >= 0)  # numbered in household order


def test_repeats_make_distinct_copies(synthetic_small):
    out = select_households(synthetic_small, np.array([3, 3, 3]))
    size = int(np.sum(synthetic_small.arrays["person_household_id"] == 3))
    assert out.n_persons == 3 * size
    assert out.arrays["person_household_id"].tolist() == sorted([0, 1, 2] * size)
    assert out.n_entities("tax_unit") == 3 * len(set(
        synthetic_small.arrays["person_tax_unit_id"][synthetic_small.arrays["person_household_id"] == 3]))


def test_empty_selection_and_bad_positions(synthetic_small):
    out = select_households(synthetic_small, np.array([], dtype=np.int64))
    assert out.n_households == 0 and out.n_persons == 0
    with pytest.raises(DatasetError, match="out of range"):
        select_households(synthetic_small, np.array([0, 10_000]))
    with pytest.raises(DatasetError, match="integer"):
        select_households(synthetic_small, np.array([0.5]))


def test_family_id_float_dtype_kept():
    data = random_structure(np.random.default_rng(1), 5)
    data = data.replace_arrays(family_id=data.arrays["family_id"].astype(float))
    out = select_households(data, np.array([4, 0]))
    assert out.arrays["family_id"].dtype == np.float64


def test_speed_100k():
    data = generate_synthetic(50_000, seed=2)
    positions = np.random.default_rng(0).integers(0, data.n_households, 100_000)
    select_households(data, positions[:10])  # warm the structure caches
    start = time.perf_counter()
    out = select_households(data, positions)
    assert time.perf_counter() - start < 2.0
    assert out.n_households == 100_000
