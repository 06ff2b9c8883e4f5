"""A seeded synthetic household dataset: the embedded default that runs offline.

It is not a survey. It is shaped so that PolicyEngine US computes every default target variable with plausible
shares: households of 1-6 people (heads, spouses, children, adult relatives and roommates) grouped into tax, SPM,
family and marital units; skewed incomes with a heavy top tail (a few households above $500k and $1M AGI);
states drawn by 2020 census population; rent, disability and employer coverage so SNAP, SSI, TANF, EITC, the ACA
PTC, Medicaid, federal and state income tax all come out non-zero. Income variables are policyengine-us *input*
variables (`employment_income_before_lsr`, not the computed `employment_income`).
"""

from __future__ import annotations

import numpy as np

from policyengine_us_data.datasets.household_data import ENTITIES, HouseholdData, id_name, link_name
from policyengine_us_data.states import STATE_POPULATION_2020

DEFAULT_HOUSEHOLDS = 1000
DEFAULT_SEED = 0
DEFAULT_PERIOD = 2024
US_HOUSEHOLDS = 131_000_000
"""Weighted household count the weights sum to (about the number of US households)."""

# Person roles, in within-household order.
HEAD, SPOUSE, CHILD, ADULT_CHILD, PARENT, ROOMMATE = range(6)
MAX_PERSONS = 6

_HEAD_AGE_BANDS = np.array([[18, 25], [25, 35], [35, 45], [45, 55], [55, 65], [65, 75], [75, 91]])
_HEAD_AGE_P = np.array([0.05, 0.16, 0.17, 0.17, 0.19, 0.15, 0.11])


def generate_synthetic(
    n_households: int = DEFAULT_HOUSEHOLDS, seed: int = DEFAULT_SEED, period: int = DEFAULT_PERIOD
) -> HouseholdData:
    """Generate `n_households` synthetic households for `period`, deterministically from `seed`."""
    if n_households < 1:
        raise ValueError(f"n_households must be at least 1, got {n_households}")
    rng = np.random.default_rng(seed)
    people = _draw_people(rng, n_households)
    arrays = _structure(people, n_households)
    arrays.update(_incomes(rng, people, n_households))
    arrays.update(_household_inputs(rng, people, arrays, n_households))
    return HouseholdData(arrays, int(period))


def _draw_people(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Household composition: one row per person with its household, role and age, ordered by household."""
    band = rng.choice(len(_HEAD_AGE_BANDS), size=n, p=_HEAD_AGE_P)
    head_age = rng.integers(_HEAD_AGE_BANDS[band, 0], _HEAD_AGE_BANDS[band, 1])
    p_married = np.select([head_age < 25, head_age < 65, head_age < 75], [0.2, 0.55, 0.5], 0.35)
    married = rng.random(n) < p_married
    p_kids = np.select([head_age < 25, head_age < 45, head_age < 55], [0.3, 0.72, 0.5], 0.04)
    p_kids = np.where(married, p_kids, p_kids * 0.6)
    n_kids = np.where(rng.random(n) < p_kids, rng.choice([1, 2, 3, 4], size=n, p=[0.4, 0.35, 0.17, 0.08]), 0)
    n_other = np.where(rng.random(n) < 0.2, rng.choice([1, 2], size=n, p=[0.8, 0.2]), 0)
    n_kids = np.minimum(n_kids, MAX_PERSONS - 1 - married - n_other)
    size = 1 + married + n_kids + n_other

    household = np.repeat(np.arange(n), size)
    rank = np.arange(len(household)) - np.repeat(np.cumsum(size) - size, size)
    role = np.full(len(household), HEAD)
    spouse_slot = married[household] & (rank == 1)
    role[spouse_slot] = SPOUSE
    first_kid = 1 + married[household]
    is_kid = (rank >= first_kid) & (rank < first_kid + n_kids[household])
    role[is_kid] = CHILD
    is_other = rank >= first_kid + n_kids[household]
    h_age = head_age[household]
    other_kind = rng.choice([ADULT_CHILD, PARENT, ROOMMATE], size=len(household), p=[0.4, 0.2, 0.4])
    other_kind = np.where((other_kind == ADULT_CHILD) & (h_age < 40), ROOMMATE, other_kind)
    role[is_other] = other_kind[is_other]

    age = _ages(rng, role, h_age)
    return {"household": household, "role": role, "age": age, "married": married[household]}


def _ages(rng: np.random.Generator, role: np.ndarray, head_age: np.ndarray) -> np.ndarray:
    """Ages consistent with roles: spouses near the head, children young enough to be the head's."""
    m = len(role)
    age = head_age.astype(float)
    spouse_age = np.clip(head_age + np.round(rng.normal(0, 3, m)), 18, 95)
    kid_age = np.floor(rng.random(m) * (np.minimum(17, head_age - 16) + 1))
    adult_child_age = 18 + np.floor(rng.random(m) * (np.clip(head_age - 36, 1, 13)))
    parent_age = np.clip(head_age + rng.integers(20, 32, m), 65, 95)
    roommate_age = rng.integers(20, 61, m)
    age = np.select(
        [role == SPOUSE, role == CHILD, role == ADULT_CHILD, role == PARENT, role == ROOMMATE],
        [spouse_age, kid_age, adult_child_age, parent_age, roommate_age],
        age,
    )
    return age.astype(float)


def _entity_ids(household: np.ndarray, own_unit: np.ndarray) -> np.ndarray:
    """Contiguous entity ids: members not in their own unit share the household's primary unit."""
    rank = np.arange(len(household)) - np.searchsorted(household, household)
    key = household.astype(np.int64) * (MAX_PERSONS + 1) + np.where(own_unit, rank + 1, 0)
    return np.unique(key, return_inverse=True)[1].astype(np.int64)


def _structure(people: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Ids, links, and tax-unit roles. Adult relatives and roommates file their own returns."""
    household, role = people["household"], people["role"]
    primary_tax = np.isin(role, (HEAD, SPOUSE, CHILD))
    primary_family = role != ROOMMATE
    links = {
        "household": household.astype(np.int64),
        "tax_unit": _entity_ids(household, ~primary_tax),
        "spm_unit": _entity_ids(household, ~primary_family),
        "family": _entity_ids(household, ~primary_family),
        "marital_unit": _entity_ids(household, ~np.isin(role, (HEAD, SPOUSE))),
    }
    arrays: dict[str, np.ndarray] = {"person_id": np.arange(len(household), dtype=np.int64)}
    for entity in ENTITIES:
        arrays[id_name(entity)] = np.arange(int(links[entity].max()) + 1, dtype=np.int64)
        arrays[link_name(entity)] = links[entity]
    arrays["age"] = people["age"]
    arrays["is_household_head"] = role == HEAD
    arrays["is_tax_unit_head"] = ~np.isin(role, (SPOUSE, CHILD))
    arrays["is_tax_unit_spouse"] = role == SPOUSE
    arrays["is_tax_unit_dependent"] = role == CHILD
    return arrays


def _lognormal(rng: np.random.Generator, median: float | np.ndarray, sigma: float, m: int) -> np.ndarray:
    return np.asarray(median) * np.exp(rng.normal(0.0, sigma, m))


def _incomes(rng: np.random.Generator, people: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Person incomes: lognormal bodies, a household factor for clustering, Pareto tails at the top."""
    age, role, household = people["age"], people["role"], people["household"]
    m = len(age)
    adult = age >= 18
    hh_factor = np.exp(rng.normal(0.0, 0.45, n))[household]
    disabled = rng.random(m) < np.select([age < 18, age < 65], [0.03, 0.08], 0.25)
    p_work = np.select([age < 16, age < 18, age < 25, age < 55, age < 62, age < 67, age < 75],
                       [0.0, 0.2, 0.67, 0.83, 0.7, 0.45, 0.2], 0.06)
    p_work = np.where(disabled, p_work * 0.25, p_work)
    works = rng.random(m) < p_work
    median = np.select([age < 18, age < 25, age < 35, age < 55], [4_000, 24_000, 50_000, 64_000], 55_000)
    wages = np.where(works, np.minimum(_lognormal(rng, median, 0.75, m) * hh_factor, 400_000), 0.0)
    top = (rng.random(n) < 0.015)[household] & (role == HEAD)
    wages = np.where(top, 250_000 * (rng.pareto(1.6, m) + 1), wages)

    se = np.where(adult & (age < 76) & (rng.random(m) < 0.09), _lognormal(rng, 18_000, 1.1, m) * hh_factor, 0.0)
    se = np.where((se > 0) & (rng.random(m) < 0.12), -_lognormal(rng, 5_000, 0.8, m), se)
    p_ss = np.select([age < 62, age < 67], [0.0, 0.55], 0.93)
    ss_ret = np.where(rng.random(m) < p_ss, np.minimum(_lognormal(rng, 21_000, 0.35, m), 50_000), 0.0)
    ss_dis = np.where(disabled & adult & (age < 67) & (rng.random(m) < 0.55), _lognormal(rng, 16_000, 0.3, m), 0.0)
    ltcg = np.where(adult & (rng.random(m) < 0.08), _lognormal(rng, 4_000, 2.0, m), 0.0)
    cg_top = (rng.random(n) < 0.0025)[household] & (role == HEAD)
    ltcg = np.where(cg_top, 1_000_000 * (rng.pareto(1.2, m) + 1), ltcg)
    rental = np.where(adult & (age >= 25) & (rng.random(m) < 0.04), _lognormal(rng, 8_000, 1.0, m), 0.0)
    rental = np.where((rental > 0) & (rng.random(m) < 0.25), -0.5 * rental, rental)

    def sometimes(p: float | np.ndarray, med: float, sigma: float, factor: np.ndarray | float = 1.0) -> np.ndarray:
        return np.where(adult & (rng.random(m) < p), _lognormal(rng, med, sigma, m) * factor, 0.0)

    return {
        "is_female": _sexes(rng, role, household, n),
        "is_disabled": disabled,
        "employment_income_before_lsr": np.round(wages, 0),
        "self_employment_income_before_lsr": np.round(se, 0),
        "social_security_retirement": np.round(ss_ret, 0),
        "social_security_disability": np.round(ss_dis, 0),
        "taxable_interest_income": np.round(sometimes(0.35, 250, 1.8, hh_factor), 0),
        "qualified_dividend_income": np.round(sometimes(0.18, 1_500, 2.0, hh_factor), 0),
        "non_qualified_dividend_income": np.round(sometimes(0.10, 400, 1.5, hh_factor), 0),
        "long_term_capital_gains_before_response": np.round(ltcg, 0),
        "taxable_pension_income": np.round(sometimes(np.where(age >= 60, 0.3, 0.0), 14_000, 0.8), 0),
        "rental_income": np.round(rental, 0),
        "unemployment_compensation": np.round(sometimes(np.where(age < 65, 0.03, 0.0), 5_000, 0.6), 0),
    }


def _sexes(rng: np.random.Generator, role: np.ndarray, household: np.ndarray, n: int) -> np.ndarray:
    """Half of heads female; spouses mostly of the other sex; everyone else at random."""
    head_female = (rng.random(n) < 0.5)[household]
    spouse_female = np.where(rng.random(len(role)) < 0.95, ~head_female, head_female)
    return np.select([role == HEAD, role == SPOUSE], [head_female, spouse_female], rng.random(len(role)) < 0.5)


def _household_inputs(
    rng: np.random.Generator, people: dict[str, np.ndarray], arrays: dict[str, np.ndarray], n: int
) -> dict[str, np.ndarray]:
    """Housing costs, childcare, employer coverage, take-up, state, district placeholder and weights."""
    household, role, age = people["household"], people["role"], people["age"]
    m = len(household)
    earnings = arrays["employment_income_before_lsr"]
    hh_earnings = np.bincount(household, weights=earnings, minlength=n)
    p_rent = np.where(hh_earnings < 30_000, 0.55, np.where(hh_earnings < 100_000, 0.35, 0.15))
    renter = (rng.random(n) < p_rent)[household]
    head = role == HEAD
    rent = np.where(head & renter, _lognormal(rng, 15_000, 0.4, m), 0.0)
    property_tax = np.where(head & ~renter, _lognormal(rng, 3_500, 0.7, m), 0.0)

    spm = arrays["person_spm_unit_id"]
    n_spm = len(arrays["spm_unit_id"])
    young_kids = np.bincount(spm, weights=(role == CHILD) & (age < 13), minlength=n_spm) > 0
    childcare = np.where(young_kids & (rng.random(n_spm) < 0.4), _lognormal(rng, 7_000, 0.6, n_spm), 0.0)

    good_job = (earnings > 20_000) & np.isin(role, (HEAD, SPOUSE))
    offered = (np.bincount(household, weights=good_job, minlength=n) > 0) & (rng.random(n) < 0.85)
    has_esi = offered[household] & np.isin(role, (HEAD, SPOUSE, CHILD)) & (age < 65)

    fips = np.array(sorted(STATE_POPULATION_2020))
    shares = np.array([STATE_POPULATION_2020[f] for f in fips], dtype=float)
    weight = np.exp(rng.normal(0.0, 0.25, n))
    n_tax = len(arrays["tax_unit_id"])
    return {
        "pre_subsidy_rent": np.round(rent, 0),
        "real_estate_taxes": np.round(property_tax, 0),
        "has_esi": has_esi,
        "spm_unit_pre_subsidy_childcare_expenses": np.round(childcare, 0),
        # Take-up below 100%, as in survey-based data (a clone build may redraw these per clone).
        "takes_up_snap_if_eligible": rng.random(n_spm) < 0.82,
        "takes_up_tanf_if_eligible": rng.random(n_spm) < 0.3,
        "takes_up_aca_if_eligible": rng.random(n_tax) < 0.6,
        "state_fips": rng.choice(fips, size=n, p=shares / shares.sum()).astype(np.int64),
        "congressional_district_geoid": np.zeros(n, dtype=np.int64),
        "household_weight": weight * (US_HOUSEHOLDS / weight.sum()),
    }
