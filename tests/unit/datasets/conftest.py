"""Small random household structures shared by the dataset unit tests."""

from __future__ import annotations

import numpy as np
import pytest

from policyengine_us_data.datasets.household_data import HouseholdData
from policyengine_us_data.datasets.synthetic import generate_synthetic


def random_structure(rng: np.random.Generator, n_households: int, shuffle: bool = True) -> HouseholdData:
    """Households of 1-6 persons with random sub-entity splits, non-contiguous ids and shuffled rows."""
    sizes = rng.integers(1, 7, n_households)
    household = np.repeat(np.arange(n_households), sizes)
    n = len(household)
    arrays: dict[str, np.ndarray] = {}
    ids = {"household": np.arange(n_households)}
    links = {"household": household}
    for entity, splits in (("tax_unit", 3), ("spm_unit", 2), ("family", 2), ("marital_unit", 4)):
        sub = rng.integers(0, splits, n)
        _, links[entity] = np.unique(household * 10 + sub, return_inverse=True)
        ids[entity] = np.arange(links[entity].max() + 1)
    person_order = rng.permutation(n) if shuffle else np.arange(n)
    arrays["person_id"] = (np.arange(n) * 3 + 7)[person_order]
    for entity in ids:
        offset = rng.integers(0, 50)
        relabel = rng.permutation(len(ids[entity])) + offset
        entity_order = rng.permutation(len(ids[entity])) if shuffle else np.arange(len(ids[entity]))
        arrays[f"{entity}_id"] = relabel[entity_order]
        arrays[f"person_{entity}_id"] = relabel[links[entity]][person_order]
        arrays[f"{entity}_weight"] = (relabel[entity_order] * 1.5).astype(float)
    arrays["age"] = (np.arange(n, dtype=float) % 90)[person_order]
    arrays["employment_income_before_lsr"] = rng.lognormal(10, 1, n)
    return HouseholdData(arrays, 2024)


@pytest.fixture(scope="session")
def synthetic_small() -> HouseholdData:
    return generate_synthetic(200, seed=5)
