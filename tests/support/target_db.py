"""Build small target databases in upstream's schema for tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Iterable, Sequence

SCHEMA = """
CREATE TABLE strata (stratum_id INTEGER PRIMARY KEY, definition_hash TEXT, parent_stratum_id INTEGER, notes TEXT);
CREATE TABLE stratum_constraints (stratum_id INTEGER, constraint_variable TEXT, operation TEXT, value TEXT, notes TEXT);
CREATE TABLE targets (target_id INTEGER PRIMARY KEY, variable TEXT, period INTEGER, stratum_id INTEGER,
    reform_id INTEGER DEFAULT 0, value REAL, active INTEGER, tolerance REAL, source TEXT, notes TEXT,
    UNIQUE (variable, period, stratum_id, reform_id));
"""

Constraint = tuple[str, str, str]


def make_target_db(path: str | Path, targets: Iterable[tuple[str, Sequence[Constraint], float, int]], period: int = 2024) -> Path:
    """Write a database with one stratum per distinct constraint set.

    `targets` holds (variable, constraints, value, reform_id); constraints are
    (variable, operation, value-as-text) triples, geographic ones included.
    """
    path = Path(path)
    con = sqlite3.connect(path)
    con.executescript(SCHEMA)
    strata: dict[tuple, int] = {}
    for target_id, (variable, constraints, value, reform_id) in enumerate(targets, start=1):
        key = tuple(sorted(constraints))
        if key not in strata:
            strata[key] = len(strata) + 1
            con.execute("INSERT INTO strata VALUES (?, ?, NULL, NULL)", (strata[key], str(hash(key))))
            for var, op, val in key:
                con.execute("INSERT INTO stratum_constraints VALUES (?, ?, ?, ?, NULL)", (strata[key], var, op, val))
        con.execute(
            "INSERT INTO targets VALUES (?, ?, ?, ?, ?, ?, 1, 0.0, 'test', NULL)",
            (target_id, variable, period, strata[key], reform_id, value),
        )
    con.commit()
    con.close()
    return path


def every_rule_targets(states: Sequence[int], districts: Sequence[int]) -> list[tuple[str, list[Constraint], float, int]]:
    """Targets exercising every cell rule: household, person, tax-unit and SPM-unit amounts,
    count variables, domains on other entities, reform rows, and all three geo levels."""
    rows: list[tuple[str, list[Constraint], float, int]] = [
        ("household_count", [], 1e6, 0),
        ("person_count", [("age", ">=", "18")], 2e6, 0),
        ("person_count", [("age", "<", "18")], 5e5, 0),
        ("tax_unit_count", [("adjusted_gross_income", ">", "0")], 9e5, 0),
        ("spm_unit_count", [], 8e5, 0),
        ("employment_income", [("age", ">=", "25")], 1e10, 0),
        ("adjusted_gross_income", [("adjusted_gross_income", ">=", "50000")], 5e9, 0),
        ("income_tax", [], 1e9, 0),
        ("eitc", [], 1e8, 0),
        ("snap", [("snap", ">", "0")], 1e8, 0),
        ("household_count", [("snap", ">", "0")], 1e5, 0),
        ("household_net_income", [], 2e10, 0),
        ("medicaid_enrolled", [], 3e5, 0),
        ("eitc", [], 5e7, 1),
    ]
    for fips in states:
        geo = [("state_fips", "==", str(fips))]
        rows += [
            ("household_count", geo, 1e4, 0),
            ("income_tax", geo, 1e7, 0),
            ("state_income_tax", geo, 1e6, 0),
            ("snap", geo + [("snap", ">", "0")], 1e6, 0),
        ]
    for geoid in districts:
        geo = [("state_fips", "==", str(geoid // 100)), ("congressional_district_geoid", "==", str(geoid))]
        rows += [
            ("person_count", geo + [("age", ">=", "18")], 1e3, 0),
            ("adjusted_gross_income", geo, 1e8, 0),
        ]
    return rows
