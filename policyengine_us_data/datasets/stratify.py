"""Stratified subsampling of a large PolicyEngine dataset down to a target household count.

A uniform subsample of the enhanced CPS would keep almost none of the few very high-income households that carry
much of the income-tax base, and would keep thousands of near-identical middle households. Upstream's answer,
kept here: keep the high-AGI tail (up to per-bracket caps), sample the rest uniformly (optionally oversampling the
bottom AGI quarter, where benefit targets live), and reweight each stratum so weighted totals are preserved.
"""

from __future__ import annotations

import numpy as np

from policyengine_us_data.datasets.household_data import HouseholdData
from policyengine_us_data.datasets.select import select_households
from policyengine_us_data.errors import DatasetError

DEFAULT_STRATIFY_SEED = 3526
TOP_BRACKETS: tuple[tuple[float, float, int], ...] = (
    (500_000.0, 1_000_000.0, 400),
    (1_000_000.0, 2_000_000.0, 400),
    (2_000_000.0, 5_000_000.0, 400),
    (5_000_000.0, 10_000_000.0, 300),
    (10_000_000.0, np.inf, 300),
)
"""(lower AGI, upper AGI, cap): households kept per high-income bracket, sampled uniformly when over the cap."""
BOTTOM_OVERSAMPLE = 1.5

AGI_PROXY_VARIABLES: tuple[str, ...] = (
    "employment_income", "employment_income_before_lsr", "self_employment_income",
    "self_employment_income_before_lsr", "taxable_interest_income", "qualified_dividend_income",
    "non_qualified_dividend_income", "long_term_capital_gains", "long_term_capital_gains_before_response",
    "short_term_capital_gains", "taxable_pension_income", "rental_income", "partnership_s_corp_income",
    "unemployment_compensation", "alimony_income", "farm_income",
)
"""Person income inputs summed per household when no AGI is given (the first of each pair present counts)."""
_PAIRS = {"employment_income_before_lsr": "employment_income",
          "self_employment_income_before_lsr": "self_employment_income",
          "long_term_capital_gains_before_response": "long_term_capital_gains"}


def approximate_agi(data: HouseholdData) -> np.ndarray:
    """Household AGI proxy: the person income inputs in `AGI_PROXY_VARIABLES` summed to households.

    It ignores Social Security's taxable share, deductions above the line and losses limits, which is close
    enough to place households in $500k+ brackets without a simulation. Pass real AGI when you have it.
    """
    household = data.person_entity_index("household")
    total = np.zeros(data.n_households)
    for name in AGI_PROXY_VARIABLES:
        if name not in data.arrays or _PAIRS.get(name) in data.arrays:
            continue
        if data.entity_of(name) == "person":
            values = np.asarray(data.arrays[name], dtype=float)
            total += np.bincount(household, weights=values, minlength=data.n_households)
    return total


def stratified_subsample(
    data: HouseholdData,
    target_households: int,
    seed: int = DEFAULT_STRATIFY_SEED,
    agi: np.ndarray | None = None,
    oversample_bottom: bool = False,
) -> HouseholdData:
    """Subsample `data` to `target_households`, keeping the capped high-AGI tail and reweighting by stratum.

    `agi` is one value per household (None: `approximate_agi`). Households are kept in their original order.
    When the dataset already has at most `target_households` households it is returned renumbered, unsampled.
    """
    agi = approximate_agi(data) if agi is None else np.asarray(agi, dtype=float)
    n = data.n_households
    if agi.shape != (n,):
        raise DatasetError(f"agi has shape {agi.shape} but the dataset has {n} households. Pass one AGI "
                           "value per household, in household_id order.")
    if target_households < 1:
        raise DatasetError(f"target_households must be at least 1, got {target_households}.")
    if n <= target_households:
        return select_households(data, np.arange(n))
    rng = np.random.default_rng(seed)
    strata = _strata(agi, oversample_bottom)
    kept = [_sample_top(rng, strata, i, cap) for i, (_, _, cap) in enumerate(TOP_BRACKETS)]
    n_top = sum(len(k) for k in kept)
    if n_top > target_households:
        raise DatasetError(f"target_households={target_households} is smaller than the capped high-income "
                           f"tail ({n_top} households above $500k AGI). Ask for at least {n_top}.")
    rest = np.flatnonzero(strata < 0)
    kept.append(_sample_rest(rng, rest, agi, target_households - n_top, oversample_bottom))
    chosen = np.sort(np.concatenate(kept))
    subset = select_households(data, chosen)
    weights = _reweight(data, chosen, strata)
    return subset.replace_arrays(household_weight=weights) if weights is not None else subset


def _strata(agi: np.ndarray, oversample_bottom: bool) -> np.ndarray:
    """Stratum per household: bracket index for the tail; -1 for the rest, -2 for the bottom quarter."""
    strata = np.full(len(agi), -1, dtype=np.int64)
    for i, (low, high, _) in enumerate(TOP_BRACKETS):
        strata[(agi >= low) & (agi < high)] = i
    if oversample_bottom:
        strata[(strata == -1) & (agi <= np.quantile(agi, 0.25))] = -2
    return strata


def _sample_top(rng: np.random.Generator, strata: np.ndarray, bracket: int, cap: int) -> np.ndarray:
    members = np.flatnonzero(strata == bracket)
    if len(members) <= cap:
        return members
    return np.sort(rng.choice(members, size=cap, replace=False))


def _sample_rest(rng: np.random.Generator, rest: np.ndarray, agi: np.ndarray, k: int,
                 oversample_bottom: bool) -> np.ndarray:
    """`k` households from `rest` without replacement; bottom-quarter ones 1.5x as likely when asked.

    Weighted sampling without replacement uses exponential keys (Efraimidis-Spirakis): vectorised, seeded.
    """
    if k >= len(rest):
        return rest
    if not oversample_bottom:
        return np.sort(rng.choice(rest, size=k, replace=False))
    threshold = np.quantile(agi, 0.25)
    weight = np.where(agi[rest] <= threshold, BOTTOM_OVERSAMPLE, 1.0)
    keys = np.log(rng.random(len(rest))) / weight
    return np.sort(rest[np.argpartition(-keys, k - 1)[:k]])


def _reweight(data: HouseholdData, chosen: np.ndarray, strata: np.ndarray) -> np.ndarray | None:
    """Scale kept weights by stratum total / kept stratum total, then fix the grand total exactly."""
    if "household_weight" not in data.arrays:
        return None
    weight = np.asarray(data.arrays["household_weight"], dtype=float)
    new = weight[chosen].copy()
    kept_strata = strata[chosen]
    for stratum in np.unique(strata):
        total = weight[strata == stratum].sum()
        mask = kept_strata == stratum
        kept_total = new[mask].sum()
        if kept_total > 0:
            new[mask] *= total / kept_total
    if new.sum() > 0:
        new *= weight.sum() / new.sum()
    return new
