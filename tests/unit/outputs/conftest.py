"""A hand-made build small enough to check every reported number by hand.

Three targets (national 100, state 50, district 0) over four columns (2 records x 2 clones); base
household weights 10 and 30, so the uncalibrated column weights are [5, 15, 5, 15].
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from policyengine_us_data.shards.chunk_plan import ChunkResult
from policyengine_us_data.datasets.geography import CloneGeography
from policyengine_us_data.targets.targets import Constraint, TargetRow, TargetTable
from policyengine_us_data.datasets.household_data import HouseholdData


def _row(i: int, variable: str, value: float, level: str, geo_id: int, geographic_id: str,
         domain: tuple[Constraint, ...] = ()) -> TargetRow:
    labels = ",".join(c.label for c in domain)
    return TargetRow(row=i, target_id=100 + i, stratum_id=10 + i, variable=variable, period=2024, reform_id=0,
                     value=value, source_value=value, geo_level=level, geo_id=geo_id, geographic_id=geographic_id,
                     domain=domain, name=f"{level}/{geographic_id}/{variable}" + (f"/[{labels}]" if labels else ""))


@pytest.fixture()
def targets() -> TargetTable:
    return TargetTable((
        _row(0, "snap", 100.0, "national", 0, "US", (Constraint("snap", ">", 0),)),
        _row(1, "person_count", 50.0, "state", 6, "06", (Constraint("age", ">=", 18), Constraint("age", "<", 65))),
        _row(2, "eitc", 0.0, "district", 601, "0601"),
    ), year=2024)


@pytest.fixture()
def matrix() -> sp.csr_matrix:
    dense = np.array([[1.0, 2.0, 0.0, 1.0],
                      [0.0, 1.0, 0.0, 0.0],
                      [3.0, 0.0, 0.0, 0.0]])
    return sp.csr_matrix(dense)


@pytest.fixture()
def geography() -> CloneGeography:
    return CloneGeography(
        state_fips=np.array([6, 48, 6, 36], np.int32),
        cd_geoid=np.array([601, 4801, 602, 3601], np.int32),
        county_fips=np.array([6001, -1, -1, -1], np.int32),
        block_geoid=np.array(["060014001001000", "", "", ""], dtype="<U15"),
        n_records=2, n_clones=2,
    )


@pytest.fixture()
def household_data() -> HouseholdData:
    return HouseholdData(arrays={
        "household_id": np.array([0, 1]), "household_weight": np.array([10.0, 30.0]),
        "person_id": np.array([0, 1, 2]), "person_household_id": np.array([0, 1, 1]),
    }, period=2024)


@pytest.fixture()
def chunk_results() -> list[ChunkResult]:
    t0 = 1_700_000_000.0
    return [
        ChunkResult(0, 0, 2, 3, 1, 1, 4.0, 300.0, worker="w1", started=t0, finished=t0 + 4.0,
                    timings={"simulate": 3.0, "write": 0.5}),
        ChunkResult(1, 2, 4, 2, 1, 2, 6.0, 500.0, worker="w2", started=t0 + 1.0, finished=t0 + 7.0,
                    timings={"simulate": 5.0, "write": 0.5}),
        ChunkResult(2, 4, 4, 0, 0, 0, 2.0, 250.0, worker="w1", started=t0 + 4.5, finished=t0 + 6.5),
    ]
