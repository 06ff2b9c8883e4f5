"""Targets against the real policyengine-us: known variables, CPI-U uprating, the committed default db."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from policyengine_us_data.targets.constraints import ConstraintCache
from policyengine_us_data.pipeline.default_targets import (
    DEFAULT_TARGETS_DB,
    default_targets_path,
    read_meta,
)
from policyengine_us_data.targets.target_db import StratumSpec, TargetSpec, write_database
from policyengine_us_data.targets.targets import load_targets
from policyengine_us_data.targets.uprating import (
    CPI_U_PARAMETER,
    POPULATION_PARAMETER,
    policyengine_uprating,
)
from policyengine_us_data.errors import TargetError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def known(pe_system) -> set[str]:
    return set(pe_system.variables)


@pytest.fixture(scope="module")
def uprating(pe_system):
    return policyengine_uprating(pe_system)


def _upstream_db(path: Path) -> Path:
    strata = [
        StratumSpec(1, notes="United States"),
        StratumSpec(2, (("state_fips", "==", 6),), 1, "California"),
        StratumSpec(3, (("state_fips", "==", 6), ("congressional_district_geoid", "==", 612)), 2),
        StratumSpec(4, (("state_fips", "==", 6), ("congressional_district_geoid", "==", 612),
                        ("age", ">=", 18), ("age", "<", 65)), 3),
        StratumSpec(5, (("state_fips", "==", 6), ("snap", ">", 0)), 2),
        StratumSpec(6, (("medicaid_enrolled", "==", True),), 1),
        StratumSpec(7, (("filing_status", "==", "JOINT"),), 1),
    ]
    targets = [
        TargetSpec(1, "household_count", 2024, 1, 131e6),
        TargetSpec(2, "snap", 2022, 5, 11e9),
        TargetSpec(3, "person_count", 2024, 4, 460e3),
        TargetSpec(4, "person_count", 2023, 6, 80e6),
        TargetSpec(5, "income_tax", 2024, 1, 2.2e12),
        TargetSpec(6, "eitc", 2024, 1, 2e9, reform_id=1),
        TargetSpec(7, "tax_unit_count", 2024, 7, 55e6),
        TargetSpec(8, "household_count", 2024, 3, 290e3),
        TargetSpec(9, "snap", 2024, 1, 1.0, active=False),
    ]
    write_database(path / "policy_data.db", strata, targets)
    return path / "policy_data.db"


def test_hand_built_upstream_db(tmp_path: Path, known: set[str], uprating) -> None:
    table = load_targets(_upstream_db(tmp_path), 2024, known_variables=known, uprating=uprating)
    assert table.names == [
        "national/eitc/reform_1",
        "national/household_count",
        "national/income_tax",
        "national/person_count/[medicaid_enrolled==True]",
        "national/tax_unit_count/[filing_status==JOINT]",
        "state_06/snap/[snap>0]",
        "cd_0612/household_count",
        "cd_0612/person_count/[age>=18,age<65]",
    ]
    snap = table.rows[5]
    assert snap.period == 2022 and snap.value > snap.source_value  # CPI-U rose 2022 -> 2024
    medicaid = table.rows[3]
    assert medicaid.value > medicaid.source_value  # population grew 2023 -> 2024
    assert any(CPI_U_PARAMETER in n for n in table.notes) and any(POPULATION_PARAMETER in n for n in table.notes)


def test_unknown_variables_listed_together(tmp_path: Path, known: set[str]) -> None:
    path = tmp_path / "bad.db"
    write_database(path, [StratumSpec(1), StratumSpec(2, (("not_a_variable", ">", 0),))],
                   [TargetSpec(1, "snap_total_typo", 2024, 1, 1.0), TargetSpec(2, "snap", 2024, 2, 1.0),
                    TargetSpec(3, "household_count", 2024, 1, 1.0)])
    with pytest.raises(TargetError) as info:
        load_targets(path, 2024, known_variables=known)
    message = str(info.value)
    assert "2 variable(s)" in message and "snap_total_typo" in message and "not_a_variable" in message


def test_real_cpi_u_factor(uprating) -> None:
    factor = uprating("snap", 2022, 2024)
    assert 1.05 < factor < 1.2
    assert uprating("household_count", 2022, 2024) > 1.0
    assert uprating("snap", 2024, 2024) == 1.0


def test_default_db_loads_with_real_checks(known: set[str], uprating) -> None:
    assert default_targets_path() == DEFAULT_TARGETS_DB
    table = load_targets(DEFAULT_TARGETS_DB, 2024, known_variables=known, uprating=uprating)
    assert 3000 <= len(table) <= 5000
    levels = collections.Counter(r.geo_level for r in table.rows)
    assert levels["national"] >= 20 and levels["state"] >= 500 and levels["district"] >= 2000
    assert len({r.geo_id for r in table.rows if r.geo_level == "district"}) >= 400
    assert sum(r.reform_id > 0 for r in table.rows) >= 2
    assert {r.period for r in table.rows} >= {2022, 2023, 2024, 2025}
    by_name = {r.name: r for r in table.rows}
    assert 1e8 < by_name["national/household_count"].value < 1.6e8
    assert by_name["national/eitc/reform_1"].value > 0
    cache = ConstraintCache.from_targets(table)
    assert "medicaid_enrolled" in cache.constraint_variables and len(cache.reform_variables) >= 2
    assert read_meta(DEFAULT_TARGETS_DB)["year"] == "2024"
