"""Inputs shaped like upstream's chunked-builder integration test, generated here (never copied).

- `write_upstream_dataset`: 50 households, 97 persons, period 2023, one tax unit, SPM unit and family per
  household and one marital unit per person (so household, tax-unit, SPM-unit and family counts coincide,
  and marital units match persons), `snap` on every fifth household, and `spm_unit_spm_threshold`, an
  input policyengine-us 2.68 refuses. Written with h5py and no entity metadata, as upstream's files are.
- `upstream_geography`: two clones, clone 0 at block 371830501001001 (CD 3701, county 37183), clone 1 at
  block 350130001001001 (CD 3502, county 35013), as upstream's `GeographyAssignment` (strings).
- `write_upstream_target_db`: upstream's minimal schema plus its `target_overview` view, with
  `household_count` national, CD 3701 and state 35, and `aca_ptc` with `aca_ptc > 0` at the same three.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import h5py
import numpy as np

from policyengine_us_data.calibration.clone_and_assign import GeographyAssignment
from policyengine_us_data.db.create_database_tables import TARGET_OVERVIEW_VIEW

PERIOD = 2023
SIZES = [1] * 19 + [2] * 18 + [3] * 10 + [4] * 3  # 50 households, 97 persons
BLOCKS = ("371830501001001", "350130001001001")
DISTRICTS = ("3701", "3502")
COUNTIES = ("37183", "35013")


def upstream_arrays(seed: int = 2023) -> dict[str, np.ndarray]:
    """The fixture's variables, one array each (household order, persons grouped by household)."""
    rng = np.random.default_rng(seed)
    sizes = np.array(SIZES)
    n_hh, n_p = len(sizes), int(sizes.sum())
    household = np.repeat(np.arange(n_hh), sizes)
    member = np.arange(n_p) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    age = np.where(member < 2, rng.integers(22, 70, n_p), rng.integers(1, 17, n_p)).astype(np.float32)
    earnings = np.where(member < 2, rng.uniform(8_000, 70_000, n_p).round(), 0.0).astype(np.float32)
    ids = np.arange(n_hh, dtype=np.int32)
    arrays = {"person_id": np.arange(n_p, dtype=np.int32), "age": age, "employment_income_before_lsr": earnings}
    for entity in ("household", "tax_unit", "spm_unit", "family"):
        arrays[f"{entity}_id"] = ids
        arrays[f"person_{entity}_id"] = household.astype(np.int32)
    arrays["marital_unit_id"] = np.arange(n_p, dtype=np.int32)
    arrays["person_marital_unit_id"] = np.arange(n_p, dtype=np.int32)
    arrays["household_weight"] = np.full(n_hh, 1_000.0, dtype=np.float32)
    arrays["state_fips"] = np.full(n_hh, 37, dtype=np.int32)
    arrays["snap"] = np.where(ids % 5 == 0, 1_200.0 + 10 * ids, 0.0).astype(np.float32)
    arrays["spm_unit_spm_threshold"] = np.full(n_hh, 30_000.0, dtype=np.float32)
    return arrays


def write_upstream_dataset(path: str | Path, arrays: dict[str, np.ndarray] | None = None) -> Path:
    """An h5 in PolicyEngine's layout without our entity metadata."""
    path = Path(path)
    with h5py.File(path, "w") as handle:
        for name, array in (arrays or upstream_arrays()).items():
            handle.create_group(name).create_dataset(str(PERIOD), data=array)
    return path


def upstream_geography(n_records: int) -> GeographyAssignment:
    def both(values: tuple[str, str], width: int) -> np.ndarray:
        return np.concatenate([np.full(n_records, v, dtype=f"U{width}") for v in values])

    return GeographyAssignment(
        block_geoid=both(BLOCKS, 15), cd_geoid=both(DISTRICTS, 4), county_fips=both(COUNTIES, 5),
        state_fips=np.repeat(np.array([37, 35], dtype=np.int32), n_records), n_records=n_records, n_clones=2,
    )


_SCHEMA = """
CREATE TABLE strata (stratum_id INTEGER PRIMARY KEY, definition_hash VARCHAR(64), parent_stratum_id INTEGER,
    notes VARCHAR);
CREATE TABLE stratum_constraints (constraint_id INTEGER PRIMARY KEY, stratum_id INTEGER,
    constraint_variable TEXT, operation TEXT, value TEXT);
CREATE TABLE targets (target_id INTEGER PRIMARY KEY, stratum_id INTEGER, variable TEXT,
    reform_id INTEGER DEFAULT 0, value REAL, period INTEGER, active INTEGER DEFAULT 1);
"""
_GEOS = ([], [("congressional_district_geoid", "=", "3701")], [("state_fips", "=", "35")])


def write_upstream_target_db(path: str | Path) -> str:
    """The database; returns its `sqlite:///` URI as upstream's callers pass it."""
    connection = sqlite3.connect(path)
    connection.executescript(_SCHEMA)
    connection.execute(TARGET_OVERVIEW_VIEW)
    domains = ([], [("aca_ptc", ">", "0")])
    stratum = 0
    for variable, domain in zip(("household_count", "aca_ptc"), domains):
        for geo, value in zip(_GEOS, (100, 50, 50)):
            stratum += 1
            connection.execute("INSERT INTO strata VALUES (?, NULL, NULL, NULL)", (stratum,))
            for constraint in domain + geo:
                connection.execute("INSERT INTO stratum_constraints (stratum_id, constraint_variable, operation, "
                                   "value) VALUES (?, ?, ?, ?)", (stratum, *constraint))
            connection.execute("INSERT INTO targets (target_id, stratum_id, variable, reform_id, value, period, "
                               "active) VALUES (?, ?, ?, 0, ?, ?, 1)", (stratum, stratum, variable, value, PERIOD))
    connection.commit()
    connection.close()
    return f"sqlite:///{path}"
