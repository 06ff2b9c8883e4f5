"""The embedded default dataset through the real policyengine-us: every default target variable computes,
with weighted totals and non-zero shares in plausible ranges.

One `Microsimulation` (built from an h5 file written by `write_dataset`) serves the whole module.
Ranges are deliberately loose (a 1,000-household synthetic sample is not the CPS) but each is anchored on a real
2024 magnitude, given in the comment, so a regression that zeroes a programme or inflates it tenfold fails.
"""

from __future__ import annotations

import numpy as np
import pytest

from policyengine_us_data.datasets.h5io import read_dataset, write_dataset
from policyengine_us_data.datasets.synthetic import DEFAULT_PERIOD, generate_synthetic

pytestmark = pytest.mark.integration

B = 1e9
T = 1e12
# variable: (total low, total high, household share with a non-zero value low, high)
RANGES = {
    "household_count": (129e6, 133e6, 1.0, 1.0),          # ~131 M US households
    "person_count": (260e6, 400e6, 1.0, 1.0),             # ~335 M persons
    "age": (8e9, 16e9, 0.99, 1.0),                        # sum of ages: persons x ~39
    "employment_income": (6 * T, 18 * T, 0.55, 0.85),    # wages ~ $11 T
    "adjusted_gross_income": (8 * T, 25 * T, 0.8, 1.0),   # AGI ~ $15 T
    "income_tax": (0.5 * T, 6 * T, 0.45, 0.9),           # federal income tax ~ $2.2 T
    "state_income_tax": (100 * B, 1.5 * T, 0.3, 0.9),     # state income taxes ~ $0.5 T
    "eitc": (15 * B, 150 * B, 0.04, 0.3),                 # EITC ~ $65 B, ~ 23 M returns
    "snap": (30 * B, 250 * B, 0.05, 0.3),                 # SNAP ~ $100 B, ~ 12% of households
    "ssi": (5 * B, 120 * B, 0.005, 0.12),                 # SSI ~ $60 B
    "tanf": (0.5 * B, 40 * B, 0.002, 0.06),               # TANF cash ~ $8 B, ~ 1 M families
    "medicaid_enrolled": (30e6, 140e6, 0.1, 0.5),         # ~ 80 M enrolled persons
    "aca_ptc": (10 * B, 250 * B, 0.02, 0.25),             # ACA PTC ~ $100 B
    "household_net_income": (8 * T, 30 * T, 0.95, 1.0),
}


@pytest.fixture(scope="module")
def simulation(tmp_path_factory):
    from policyengine_us import Microsimulation

    path = write_dataset(tmp_path_factory.mktemp("synthetic") / "default.h5", generate_synthetic())
    assert read_dataset(path).n_households == 1000
    return Microsimulation(dataset=str(path))


@pytest.fixture(scope="module")
def household_values(simulation):
    weight = np.asarray(simulation.calculate("household_weight", DEFAULT_PERIOD, map_to="household"))
    values = {
        name: np.asarray(simulation.calculate(name, DEFAULT_PERIOD, map_to="household"), dtype=float)
        for name in RANGES
    }
    return weight, values


def test_dataset_loaded_as_written(simulation):
    assert len(simulation.calculate("person_id", DEFAULT_PERIOD)) == generate_synthetic().n_persons
    states = np.asarray(simulation.calculate("state_fips", DEFAULT_PERIOD))
    assert len(np.unique(states)) > 30


@pytest.mark.parametrize("name", list(RANGES))
def test_target_variable_plausible(household_values, name):
    weight, values = household_values
    low, high, share_low, share_high = RANGES[name]
    total = float(np.sum(values[name] * weight))
    share = float(np.sum(weight * (values[name] != 0)) / weight.sum())
    assert np.all(np.isfinite(values[name]))
    assert low <= total <= high, f"{name}: weighted total {total:.4g} outside [{low:.3g}, {high:.3g}]"
    assert share_low <= share <= share_high, f"{name}: non-zero share {share:.3f} outside [{share_low}, {share_high}]"


def test_high_income_tail_pays_much_of_income_tax(household_values):
    weight, values = household_values
    agi, tax = values["adjusted_gross_income"], values["income_tax"]
    assert np.sum(agi > 500_000) >= 3 and np.sum(agi > 1_000_000) >= 1
    top = agi > 500_000
    assert np.sum((tax * weight)[top]) / np.sum(tax * weight) > 0.15
