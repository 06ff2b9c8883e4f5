"""Materialise a chunk's subset dataset: the clone households of a set of columns.

Column `c` is base record `c % n_records` under clone `c // n_records`. The subset holds those
households (a base household may appear several times, once per clone), their persons and
sub-entities with fresh contiguous ids, the clone's geography written in, and household weight 1.

Upstream's tests patch `derive_geography_from_blocks`, `load_cd_geoadj_values` and
`calculate_spm_thresholds_vectorized` on this module; the code below calls them through this
module's globals, so a patch takes effect exactly as it does upstream.
"""

from __future__ import annotations

import numpy as np

from policyengine_us_data.datasets.geography import CloneGeography, derive_geography_from_blocks
from policyengine_us_data.kernel.spm_thresholds import (
    calculate_spm_thresholds_vectorized,
    load_cd_geoadj_values,
    tenure_key,
)
from policyengine_us_data.kernel.takeup import (
    TAKEUP_ENTITIES,
    TAKEUP_RATES,
    keyed_uniforms,
    position_within_group,
)
from policyengine_us_data.datasets.household_data import HouseholdData
from policyengine_us_data.datasets.select import select_households

SPM_THRESHOLD = "spm_unit_spm_threshold"
CLONE_ENTITIES = {
    "state_fips": "household", "congressional_district_geoid": "household", "household_weight": "household",
    "county_fips": "household", "block_geoid": "household", SPM_THRESHOLD: "spm_unit",
}
"""Entities of the arrays written for a clone (so a chunk's entities never depend on array lengths)."""


def column_records(columns: np.ndarray, n_records: int) -> tuple[np.ndarray, np.ndarray]:
    """(record index, clone index) of every global column."""
    cols = np.asarray(columns, dtype=np.int64)
    return cols % n_records, cols // n_records


def materialise_columns(
    base: HouseholdData,
    geography: CloneGeography,
    columns: np.ndarray,
    *,
    rerandomize_takeup: bool = False,
) -> HouseholdData:
    """The chunk's households, one per column in the given order, under each column's clone geography."""
    cols = np.asarray(columns, dtype=np.int64)
    records, clones = column_records(cols, base.n_households)
    subset = select_households(base, records)
    arrays = dict(subset.arrays)
    arrays["state_fips"] = geography.state_fips[cols].astype(np.int32)
    arrays["congressional_district_geoid"] = geography.cd_geoid[cols].astype(np.int32)
    arrays["household_weight"] = np.ones(len(records), dtype=np.float64)
    _drop_stale_geography(arrays)
    arrays.update(local_geography(geography, cols))
    entities = {**subset.entities, **CLONE_ENTITIES}
    data = HouseholdData(arrays=arrays, period=base.period, entities=entities)
    if SPM_THRESHOLD in arrays:
        data = data.replace_arrays(**{SPM_THRESHOLD: clone_spm_thresholds(data)})
    if rerandomize_takeup:
        original_ids = np.asarray(base.arrays["household_id"])[records]
        data = redraw_takeup(data, original_ids, clones)
    return data


def _drop_stale_geography(arrays: dict[str, np.ndarray]) -> None:
    """Geography below the state that the base data carried no longer matches the clone's."""
    for name in ("county_fips", "county", "block_geoid", "zip_code"):
        arrays.pop(name, None)


def local_geography(geography: CloneGeography, cols: slice) -> dict[str, np.ndarray]:
    """County (and block) of each column where the geography knows them; policyengine-us derives the
    county, and so ACA rating areas, from `county_fips` ("" = unknown: it falls back to the state's)."""
    blocks = np.asarray(geography.block_geoid[cols]).astype(str)
    counties = geography.county_fips[cols]
    has_block = blocks != ""
    if not len(blocks) or not (has_block.any() or (counties >= 0).any()):
        return {}
    county = np.where(counties >= 0, np.char.zfill(counties.astype(str), 5), "").astype("U5")
    if has_block.any():
        unique, inverse = np.unique(blocks[has_block], return_inverse=True)
        derived = np.asarray(derive_geography_from_blocks(unique)["county_fips"]).astype("U5")
        county[has_block] = derived[inverse.ravel()]
        return {"county_fips": county, "block_geoid": blocks}
    return {"county_fips": county}


def clone_spm_thresholds(data: HouseholdData) -> np.ndarray:
    """SPM thresholds for each clone's district (a base threshold belongs to the household's old home)."""
    cds = np.asarray(data.arrays["congressional_district_geoid"]).astype(str)
    adjustments = load_cd_geoadj_values(sorted(set(cds.tolist())))
    unit_household = data.entity_household_index("spm_unit")
    tenure = np.asarray(data.arrays.get("spm_unit_tenure_type", np.full(len(unit_household), "RENTER")))
    geoadj = np.array([_adjustment(adjustments[cds[h]], t) for h, t in zip(unit_household, tenure)])
    ages = np.asarray(data.arrays.get("age", np.full(data.n_persons, 40.0)))
    return calculate_spm_thresholds_vectorized(
        person_ages=ages, person_spm_unit_ids=data.person_entity_index("spm_unit"),
        spm_unit_tenure_types=tenure.astype("S"), spm_unit_geoadj=geoadj, year=data.period,
    )


def _adjustment(value: float | dict, tenure: object) -> float:
    """Upstream's geoadj lookups return a number or one number per tenure."""
    return float(value[tenure_key(tenure)]) if isinstance(value, dict) else float(value)


def redraw_takeup(data: HouseholdData, original_household_ids: np.ndarray, clones: np.ndarray) -> HouseholdData:
    """Set every take-up input from draws keyed by (variable, original household, clone, member)."""
    arrays = dict(data.arrays)
    for variable, entity in TAKEUP_ENTITIES.items():
        if entity == "household":
            household_of_entity = np.arange(data.n_households)
        elif entity == "person":
            household_of_entity = data.person_entity_index("household")
        else:
            household_of_entity = data.entity_household_index(entity)
        member = position_within_group(household_of_entity)
        draws = keyed_uniforms(
            variable,
            original_household_ids[household_of_entity],
            clones[household_of_entity],
            member,
        )
        arrays[variable] = draws < TAKEUP_RATES[variable]
    entities = {**data.entities, **TAKEUP_ENTITIES}
    return HouseholdData(arrays=arrays, period=data.period, entities=entities)
