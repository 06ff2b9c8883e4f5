"""Stratified subsampling: caps, target size, weights preserved, determinism, bottom oversampling."""

from __future__ import annotations

import numpy as np
import pytest

from policyengine_us_data.datasets.household_data import HouseholdData
from policyengine_us_data.datasets.select import select_households
from policyengine_us_data.datasets.stratify import TOP_BRACKETS, approximate_agi, stratified_subsample
from policyengine_us_data.datasets.synthetic import generate_synthetic
from policyengine_us_data.errors import DatasetError


@pytest.fixture(scope="module")
def big() -> tuple[HouseholdData, np.ndarray]:
    data = generate_synthetic(20_000, seed=11)
    rng = np.random.default_rng(0)
    agi = rng.lognormal(10.8, 1.0, data.n_households)
    # Plant a heavy tail: 1,000 households in each top bracket (over every cap).
    for i, (low, high, _) in enumerate(TOP_BRACKETS):
        top = min(high, low * 3)
        agi[i * 1000:(i + 1) * 1000] = rng.uniform(low, top, 1000)
    return data, agi


def _agi_of(sub: HouseholdData, data: HouseholdData, agi: np.ndarray) -> np.ndarray:
    """Recover each kept household's AGI through a carried marker column (its original position)."""
    return agi[sub.arrays["household_marker"]]


def _marked(data: HouseholdData) -> HouseholdData:
    return HouseholdData({**data.arrays, "household_marker": np.arange(data.n_households)}, data.period,
                         {"household_marker": "household"})


def test_caps_target_and_weights(big):
    data, agi = big
    marked = _marked(data)
    sub = stratified_subsample(marked, 5_000, agi=agi)
    assert sub.n_households == 5_000
    kept_agi = _agi_of(sub, data, agi)
    for low, high, cap in TOP_BRACKETS:
        assert np.sum((kept_agi >= low) & (kept_agi < high)) == cap
    assert np.isclose(sub.arrays["household_weight"].sum(), data.arrays["household_weight"].sum())
    # Each stratum keeps its weighted total (the tail is not inflated by being kept whole).
    for low, high, _ in TOP_BRACKETS:
        full = data.arrays["household_weight"][(agi >= low) & (agi < high)].sum()
        kept = sub.arrays["household_weight"][(kept_agi >= low) & (kept_agi < high)].sum()
        assert np.isclose(full, kept)
    markers = sub.arrays["household_marker"]
    assert np.all(np.diff(markers) > 0), "original order kept, no repeats"


def test_deterministic_and_seeded(big):
    data, agi = big
    a = stratified_subsample(_marked(data), 3_000, agi=agi)
    b = stratified_subsample(_marked(data), 3_000, agi=agi)
    c = stratified_subsample(_marked(data), 3_000, agi=agi, seed=1)
    np.testing.assert_array_equal(a.arrays["household_marker"], b.arrays["household_marker"])
    assert not np.array_equal(a.arrays["household_marker"], c.arrays["household_marker"])


def test_small_tail_kept_whole():
    data = generate_synthetic(3_000, seed=4)
    agi = approximate_agi(data)
    sub = stratified_subsample(_marked(data), 1_000, seed=3526)
    kept = sub.arrays["household_marker"]
    tail = np.flatnonzero(agi >= 500_000)
    assert len(tail) > 0 and np.isin(tail, kept).all()
    assert sub.n_households == 1_000


def test_oversample_bottom(big):
    data, agi = big
    rest = agi < 500_000
    q = np.quantile(agi, 0.25)
    shares = []
    for flag in (False, True):
        sub = stratified_subsample(_marked(data), 6_000, agi=agi, oversample_bottom=flag)
        kept_agi = _agi_of(sub, data, agi)
        shares.append(np.mean(kept_agi[kept_agi < 500_000] <= q))
        assert np.isclose(sub.arrays["household_weight"].sum(), data.arrays["household_weight"].sum())
    base = np.mean(agi[rest] <= q)
    assert abs(shares[0] - base) < 0.03
    assert shares[1] > shares[0] + 0.04


def test_edge_cases(big):
    data, agi = big
    small = select_households(data, np.arange(50))
    same = stratified_subsample(small, 100, agi=agi[:50])
    assert same.n_households == 50
    with pytest.raises(DatasetError, match="smaller than the capped high-income tail"):
        stratified_subsample(data, 100, agi=agi)
    with pytest.raises(DatasetError, match="one AGI value per household"):
        stratified_subsample(data, 100, agi=agi[:10])


def test_approximate_agi_sums_person_incomes():
    data = generate_synthetic(50, seed=2)
    a = data.arrays
    names = ("employment_income_before_lsr", "self_employment_income_before_lsr", "taxable_interest_income",
             "qualified_dividend_income", "non_qualified_dividend_income",
             "long_term_capital_gains_before_response", "taxable_pension_income", "rental_income",
             "unemployment_compensation")
    manual = np.bincount(a["person_household_id"], weights=sum(a[n] for n in names), minlength=50)
    np.testing.assert_allclose(approximate_agi(data), manual)
    # A dataset carrying both employment_income and its _before_lsr input counts wages once.
    doubled = data.replace_arrays(employment_income=a["employment_income_before_lsr"])
    np.testing.assert_allclose(approximate_agi(doubled), manual)
