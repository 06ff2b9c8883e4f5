"""SPM poverty thresholds for clone households that moved to another congressional district.

Only used when the simulator accepts `spm_unit_spm_threshold` as an input (policyengine-us before
2.68): a threshold carries its household's original geography, so a clone elsewhere needs one
recomputed for its district. policyengine-us 2.68 owns the threshold as a formula and refuses it as
an input, so there the input is dropped instead (`Simulator.refused_inputs`) and these functions
are not reached.

Threshold = published BLS threshold for the unit's tenure (2 adults, 2 children) x the SPM
three-parameter equivalence scale x the district's geographic adjustment, where the adjustment is
1 + housing share of the tenure x (district median 2-bedroom rent / national median - 1). Data: the
`spm_calculator` package policyengine-us depends on (published thresholds, ACS district rents).
Names and keyword arguments are upstream's, so upstream's tests can patch them on `entity_clone`.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Iterable

import numpy as np

HOUSING_SHARES: dict[str, float] = {"renter": 0.443, "owner_with_mortgage": 0.434, "owner_without_mortgage": 0.323}
"""BLS housing share of the SPM threshold by tenure: the part of the threshold that scales with rents."""

_RENTS_FILE = "data/cd_geoadj_2023.json"


@lru_cache(maxsize=1)
def _district_rents() -> tuple[float, dict[str, float]]:
    from importlib.resources import files

    table = json.loads(files("spm_calculator").joinpath(_RENTS_FILE).read_text())
    rents = {str(int(cd)): float(row["median_2br_rent"]) for cd, row in table["congressional_districts"].items()}
    return float(table["national_median_2br_rent"]), rents


def load_cd_geoadj_values(cds: Iterable[str | int]) -> dict[str, dict[str, float]]:
    """Geographic adjustment by tenure for each district geoid (`"3701"` or 3701; a district without rent
    data gets the national adjustment, 1.0)."""
    national, rents = _district_rents()
    result: dict[str, dict[str, float]] = {}
    for cd in cds:
        ratio = rents.get(str(int(cd)), national) / national
        result[str(cd)] = {tenure: 1.0 + share * (ratio - 1.0) for tenure, share in HOUSING_SHARES.items()}
    return result


def tenure_key(tenure: object) -> str:
    """policyengine-us's tenure enum name (`OWNER_WITH_MORTGAGE`, bytes or str) as a `HOUSING_SHARES` key."""
    text = tenure.decode() if isinstance(tenure, bytes) else str(tenure)
    key = text.strip().lower()
    return key if key in HOUSING_SHARES else "renter"


def calculate_spm_thresholds_vectorized(
    *,
    person_ages: np.ndarray,
    person_spm_unit_ids: np.ndarray,
    spm_unit_tenure_types: np.ndarray,
    spm_unit_geoadj: np.ndarray,
    year: int,
) -> np.ndarray:
    """One threshold per SPM unit (positions 0..n-1 in `person_spm_unit_ids`), as float32."""
    from spm_calculator.equivalence_scale import spm_equivalence_scale
    from spm_calculator.published_thresholds import get_available_years, get_published_thresholds

    n_units = len(spm_unit_geoadj)
    units = np.asarray(person_spm_unit_ids, dtype=np.int64)
    children = np.bincount(units, weights=np.asarray(person_ages) < 18, minlength=n_units)
    adults = np.bincount(units, minlength=n_units) - children
    lone_children = (adults == 0) & (children > 0)  # the SPM counts a unit's first member as its adult
    adults, children = adults + lone_children, children - lone_children
    years = get_available_years()
    base = get_published_thresholds(min(max(int(year), years[0]), years[-1]))
    tenure = np.array([base[tenure_key(t)] for t in spm_unit_tenure_types], dtype=np.float64)
    scale = np.asarray(spm_equivalence_scale(adults, children), dtype=np.float64)
    return (tenure * scale * np.asarray(spm_unit_geoadj, dtype=np.float64)).astype(np.float32)
