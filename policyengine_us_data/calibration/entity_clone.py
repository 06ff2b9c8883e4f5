"""Materialise a chunk's subset dataset: the clone households of a set of columns.

Column `c` is base record `c % n_records` under clone `c // n_records`. The subset holds those
households (a base household may appear several times, once per clone), their persons and
sub-entities with fresh contiguous ids, the clone's geography written in, and household weight 1.
"""

from __future__ import annotations

import numpy as np

from policyengine_us_data.calibration.geography import CloneGeography
from policyengine_us_data.calibration.takeup import (
    TAKEUP_ENTITIES,
    TAKEUP_RATES,
    keyed_uniforms,
    position_within_group,
)
from policyengine_us_data.datasets.household_data import HouseholdData
from policyengine_us_data.datasets.select import select_households


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
    data = HouseholdData(arrays=arrays, period=base.period)
    if rerandomize_takeup:
        original_ids = np.asarray(base.arrays["household_id"])[records]
        data = redraw_takeup(data, original_ids, clones)
    return data


def _drop_stale_geography(arrays: dict[str, np.ndarray]) -> None:
    """Geography below the state that the base data carried no longer matches the clone's."""
    for name in ("county_fips", "county", "block_geoid", "zip_code"):
        arrays.pop(name, None)


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
    return HouseholdData(arrays=arrays, period=data.period)
