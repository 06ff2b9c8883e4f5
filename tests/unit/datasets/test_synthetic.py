"""The synthetic default dataset: deterministic, structurally sound, realistic in shape."""

from __future__ import annotations

import numpy as np
import pytest

from policyengine_us_data.datasets.h5io import validate_arrays
from policyengine_us_data.datasets.household_data import ENTITIES, KNOWN_ENTITIES
from policyengine_us_data.datasets.synthetic import (
    DEFAULT_HOUSEHOLDS,
    DEFAULT_PERIOD,
    DEFAULT_SEED,
    STATE_POPULATION_2020,
    generate_synthetic,
)


@pytest.fixture(scope="module")
def default():
    return generate_synthetic()


def test_defaults(default):
    assert (DEFAULT_HOUSEHOLDS, DEFAULT_SEED, DEFAULT_PERIOD) == (1000, 0, 2024)
    assert default.n_households == 1000 and default.period == 2024


def test_deterministic(default):
    again = generate_synthetic()
    assert list(again.arrays) == list(default.arrays)
    for name in default.arrays:
        np.testing.assert_array_equal(again.arrays[name], default.arrays[name])
    other = generate_synthetic(seed=1)
    assert not np.array_equal(other.arrays["age"][:50], default.arrays["age"][:50])


def test_structure(default):
    a = default.arrays
    validate_arrays(a, "synthetic")
    assert all(name in KNOWN_ENTITIES for name in a), "every generated variable has a known entity"
    sizes = np.bincount(a["person_household_id"], minlength=default.n_households)
    assert sizes.min() >= 1 and sizes.max() <= 6
    assert set(np.unique(sizes)) == {1, 2, 3, 4, 5, 6}
    for entity in ENTITIES:
        link = a[f"person_{entity}_id"]
        assert np.isin(link, a[f"{entity}_id"]).all()  # every person in exactly one (one link each)
        np.testing.assert_array_equal(a[f"{entity}_id"], np.arange(default.n_entities(entity)))
    heads_per_tu = np.bincount(a["person_tax_unit_id"], weights=a["is_tax_unit_head"])
    assert np.all(heads_per_tu == 1)
    assert np.all(np.bincount(a["person_tax_unit_id"], weights=a["is_tax_unit_spouse"]) <= 1)
    assert np.all(np.bincount(a["person_household_id"], weights=a["is_household_head"]) == 1)
    roles = a["is_tax_unit_head"].astype(int) + a["is_tax_unit_spouse"] + a["is_tax_unit_dependent"]
    assert np.all(roles == 1)
    assert np.all(a["age"][a["is_tax_unit_head"] | a["is_tax_unit_spouse"]] >= 18)
    assert np.all(a["age"][a["is_tax_unit_dependent"]] < 18)
    married_units = np.bincount(a["person_marital_unit_id"])
    assert married_units.max() == 2


def test_realistic_shape(default):
    a = default.arrays
    assert abs(a["household_weight"].sum() - 131e6) < 1e3
    assert 2.0 < default.n_persons / default.n_households < 2.8
    assert set(np.unique(a["state_fips"])) <= set(STATE_POPULATION_2020)
    assert len(STATE_POPULATION_2020) == 51
    assert abs(sum(STATE_POPULATION_2020.values()) - 331_449_281) < 1_000
    ca_share = np.mean(a["state_fips"] == 6)
    assert 0.08 < ca_share < 0.16
    income = sum(a[n] for n in ("employment_income_before_lsr", "self_employment_income_before_lsr",
                                "long_term_capital_gains_before_response", "qualified_dividend_income"))
    per_household = np.bincount(a["person_household_id"], weights=income)
    assert 2 <= np.sum(per_household > 500_000) <= 30
    assert np.sum(per_household > 1_000_000) >= 1
    assert np.mean(a["employment_income_before_lsr"] > 0) > 0.3
    assert np.any(a["self_employment_income_before_lsr"] < 0)
    assert np.mean(a["pre_subsidy_rent"] > 0) * default.n_persons / default.n_households > 0.25
    assert a["is_disabled"].any() and a["has_esi"].any()
    assert np.all(a["congressional_district_geoid"] == 0)


def test_small_and_invalid_sizes():
    one = generate_synthetic(1, seed=3)
    validate_arrays(one.arrays, "one")
    with pytest.raises(ValueError):
        generate_synthetic(0)
