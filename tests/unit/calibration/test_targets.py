"""Targets from a database in upstream's schema: period choice, order, names, filters, errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from policyengine_us_data.targets.target_db import (
    StratumSpec,
    TargetSpec,
    parse_value,
    write_database,
)
from policyengine_us_data.targets.targets import Constraint, TargetTable, load_targets
from policyengine_us_data.targets.uprating import SeriesUprating
from policyengine_us_data.errors import InputError, TargetError

STRATA = [
    StratumSpec(1),
    StratumSpec(2, (("state_fips", "==", 6),), 1),
    StratumSpec(3, (("state_fips", "==", 6), ("snap", ">", 0)), 2),
    StratumSpec(4, (("congressional_district_geoid", "==", 612), ("age", "<", 65), ("age", ">=", 18)), 2),
    StratumSpec(5, (("state_fips", "==", 1),), 1),
    StratumSpec(6, (("medicaid_enrolled", "==", True),), 1),
    StratumSpec(7, (("congressional_district_geoid", "=", 101), ("state_fips", "==", 1)), 5),
]
TARGETS = [
    TargetSpec(1, "household_count", 2024, 1, 130e6),
    TargetSpec(2, "snap", 2022, 3, 10.0),
    TargetSpec(3, "snap", 2023, 3, 20.0),
    TargetSpec(4, "snap", 2026, 3, 30.0),  # after the build year: not chosen while 2023 exists
    TargetSpec(5, "person_count", 2025, 4, 400.0),
    TargetSpec(6, "person_count", 2026, 4, 500.0),  # earliest of two future periods is 2025
    TargetSpec(7, "household_count", 2024, 5, 2e6),
    TargetSpec(8, "household_count", 2024, 2, 14e6),
    TargetSpec(9, "person_count", 2024, 6, 80e6),
    TargetSpec(10, "eitc", 2024, 1, 60e9),
    TargetSpec(11, "eitc", 2024, 1, 5e9, reform_id=1),
    TargetSpec(12, "household_count", 2024, 7, 3e5),
    TargetSpec(13, "snap", 2024, 1, 99.0, active=False),
    TargetSpec(14, "household_count", 2024, 4, 1e5, active=False),
]
EXPECTED_NAMES = [
    "national/eitc",
    "national/eitc/reform_1",
    "national/household_count",
    "national/person_count/[medicaid_enrolled==True]",
    "state_01/household_count",
    "state_06/household_count",
    "state_06/snap/[snap>0]",
    "cd_0101/household_count",
    "cd_0612/person_count/[age>=18,age<65]",
]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "targets.db"
    write_database(path, STRATA, TARGETS)
    return path


def raw_db(path: Path, sql: str, params: list[tuple] | None = None) -> Path:
    """A database built with hand-written SQL, for the broken cases."""
    conn = sqlite3.connect(path)
    conn.executescript(sql)
    conn.commit()
    conn.close()
    return path


def test_rows_order_names_and_geography(db: Path) -> None:
    table = load_targets(db, 2024)
    assert table.names == EXPECTED_NAMES
    assert [r.row for r in table.rows] == list(range(len(EXPECTED_NAMES)))
    by_name = {r.name: r for r in table.rows}
    cd = by_name["cd_0612/person_count/[age>=18,age<65]"]
    assert (cd.geo_level, cd.geo_id, cd.geographic_id) == ("district", 612, "0612")
    assert cd.domain == (Constraint("age", ">=", 18), Constraint("age", "<", 65))
    state = by_name["state_06/snap/[snap>0]"]
    assert (state.geo_level, state.geo_id, state.geographic_id) == ("state", 6, "06")
    national = by_name["national/household_count"]
    assert (national.geo_level, national.geo_id, national.geographic_id) == ("national", 0, "US")
    assert by_name["national/eitc/reform_1"].reform_id == 1
    assert by_name["national/person_count/[medicaid_enrolled==True]"].domain[0].value is True


def test_period_choice(db: Path) -> None:
    by_name = {r.name: r for r in load_targets(db, 2024).rows}
    assert by_name["state_06/snap/[snap>0]"].period == 2023  # latest <= 2024
    assert by_name["cd_0612/person_count/[age>=18,age<65]"].period == 2025  # else earliest
    later = {r.name: r for r in load_targets(db, 2030).rows}
    assert later["state_06/snap/[snap>0]"].period == 2026
    assert later["cd_0612/person_count/[age>=18,age<65]"].period == 2026


def test_inactive_rows_dropped(db: Path) -> None:
    table = load_targets(db, 2024)
    assert {r.target_id for r in table.rows}.isdisjoint({13, 14})


def test_filters(db: Path) -> None:
    assert load_targets(db, 2024, variables={"snap"}).names == ["state_06/snap/[snap>0]"]
    assert [r.geo_level for r in load_targets(db, 2024, geo_levels={"district"}).rows] == ["district"] * 2
    only = load_targets(db, 2024, target_ids={1, 12})
    assert only.names == ["national/household_count", "cd_0101/household_count"]
    assert [r.row for r in only.rows] == [0, 1]
    with pytest.raises(TargetError, match="unknown geo level"):
        load_targets(db, 2024, geo_levels={"county"})


def test_uprating_with_injected_function(db: Path) -> None:
    calls = []

    def uprate(variable: str, period: int, year: int) -> float:
        calls.append((variable, period, year))
        return 2.0 if period < year else 1.0

    by_name = {r.name: r for r in load_targets(db, 2024, uprating=uprate).rows}
    snap = by_name["state_06/snap/[snap>0]"]
    assert (snap.source_value, snap.value) == (20.0, 40.0)
    hh = by_name["national/household_count"]
    assert hh.value == hh.source_value
    assert ("snap", 2023, 2024) in calls
    plain = load_targets(db, 2024)
    assert all(r.value == r.source_value for r in plain.rows)


def test_series_uprating_amounts_and_counts() -> None:
    cpi = {2022: 100.0, 2024: 110.0}
    pop = {2022: 300.0, 2024: 330.0}
    up = SeriesUprating(cpi.__getitem__, pop.__getitem__)
    assert up("snap", 2022, 2024) == pytest.approx(1.1)
    assert up("person_count", 2022, 2024) == pytest.approx(1.1)
    assert up("snap", 2024, 2024) == 1.0
    no_pop = SeriesUprating(cpi.__getitem__, None)
    assert no_pop("household_count", 2022, 2024) == 1.0
    assert any("NOT uprated" in n for n in no_pop.notes)


def test_known_variables_lists_all_unknown(db: Path) -> None:
    known = {"household_count", "person_count", "snap", "age"}
    with pytest.raises(TargetError) as info:
        load_targets(db, 2024, known_variables=known)
    message = str(info.value)
    assert "eitc" in message and "medicaid_enrolled" in message and "2 variable(s)" in message
    # geographic constraint variables are not checked; a filter can leave unknown ones out
    table = load_targets(db, 2024, known_variables=known, variables={"snap", "household_count"})
    assert len(table) == 5


def test_json_round_trip_and_fingerprint(db: Path, tmp_path: Path) -> None:
    table = load_targets(db, 2024)
    table.save_json(tmp_path / "t.json")
    again = TargetTable.load_json(tmp_path / "t.json")
    assert again == table
    assert again.fingerprint() == table.fingerprint()
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(TargetError, match="bad.json"):
        TargetTable.load_json(tmp_path / "bad.json")
    records = table.records()
    assert len(records) == len(table) and records[-1]["domain"] == "age>=18,age<65"
    assert records[-1]["domain_variable"] == "age"


def test_parse_value() -> None:
    assert parse_value("True") is True and parse_value("False") is False
    assert parse_value("18") == 18 and isinstance(parse_value("18"), int)
    assert parse_value("2.5") == 2.5
    assert parse_value("SINGLE") == "SINGLE"
    assert parse_value("06") == 6


def test_missing_file_and_not_sqlite(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="does not exist"):
        load_targets(tmp_path / "nope.db", 2024)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(TargetError, match="not a readable SQLite"):
        load_targets(junk, 2024)
    assert issubclass(TargetError, InputError)


def test_missing_table_and_column(tmp_path: Path) -> None:
    path = raw_db(tmp_path / "a.db", "CREATE TABLE strata (stratum_id INTEGER);"
                  "CREATE TABLE targets (target_id INTEGER);")
    with pytest.raises(TargetError, match="table 'stratum_constraints' is missing"):
        load_targets(path, 2024)
    path = raw_db(tmp_path / "b.db", "CREATE TABLE strata (stratum_id INTEGER);"
                  "CREATE TABLE stratum_constraints (stratum_id, constraint_variable, operation, value);"
                  "CREATE TABLE targets (target_id, variable, period, stratum_id, value, active);")
    with pytest.raises(TargetError, match=r"table 'targets' lacks column\(s\) reform_id"):
        load_targets(path, 2024)


def _db_with(tmp_path: Path, constraint_sql: str = "", target_sql: str = "") -> Path:
    write_database(tmp_path / "base.db", [StratumSpec(1), StratumSpec(2)], [TargetSpec(1, "snap", 2024, 1, 1.0)])
    conn = sqlite3.connect(tmp_path / "base.db")
    conn.executescript(constraint_sql + target_sql)
    conn.commit()
    conn.close()
    return tmp_path / "base.db"


def test_unknown_operation(tmp_path: Path) -> None:
    path = _db_with(tmp_path, "INSERT INTO stratum_constraints VALUES (2, 'age', '=>', '18', NULL);",
                    "INSERT INTO targets VALUES (2, 'snap', 2024, 2, 0, 1.0, 1, NULL, '', '');")
    with pytest.raises(TargetError, match=r"stratum_constraints.*unknown operation '=>'"):
        load_targets(path, 2024)


def test_value_that_does_not_parse(tmp_path: Path) -> None:
    path = _db_with(tmp_path, "INSERT INTO stratum_constraints VALUES (2, 'age', '>=', 'eighteen', NULL);")
    with pytest.raises(TargetError, match="'eighteen' does not parse as a number"):
        load_targets(path, 2024)
    path = _db_with(tmp_path, target_sql="INSERT INTO targets VALUES (2, 'snap', 2024, 2, 0, 'lots', 1, NULL, '', '');")
    with pytest.raises(TargetError, match="target_id 2: column 'value'"):
        load_targets(path, 2024)
    path = _db_with(tmp_path, target_sql="INSERT INTO targets VALUES (2, 'snap', 'soon', 2, 0, 1.0, 1, NULL, '', '');")
    with pytest.raises(TargetError, match="column 'period' value 'soon'"):
        load_targets(path, 2024)


def test_duplicate_targets(tmp_path: Path) -> None:
    path = tmp_path / "dup.db"
    raw_db(path, "CREATE TABLE strata (stratum_id INTEGER, definition_hash, parent_stratum_id, notes);"
           "CREATE TABLE stratum_constraints (stratum_id, constraint_variable, operation, value, notes);"
           "CREATE TABLE targets (target_id, variable, period, stratum_id, reform_id, value, active, tolerance, "
           "source, notes);"
           "INSERT INTO strata VALUES (1, 'h', NULL, NULL);"
           "INSERT INTO targets VALUES (1, 'snap', 2024, 1, 0, 1.0, 1, NULL, '', '');"
           "INSERT INTO targets VALUES (2, 'snap', 2024, 1, 0, 2.0, 1, NULL, '', '');")
    with pytest.raises(TargetError, match="target_ids 1 and 2 are duplicates"):
        load_targets(path, 2024)


def test_unknown_stratum_and_conflicting_geography(tmp_path: Path) -> None:
    path = _db_with(tmp_path, target_sql="INSERT INTO targets VALUES (2, 'snap', 2024, 9, 0, 1.0, 1, NULL, '', '');")
    with pytest.raises(TargetError, match="stratum_id 9 is not in table 'strata'"):
        load_targets(path, 2024)
    path = _db_with(tmp_path, "INSERT INTO stratum_constraints VALUES (2, 'state_fips', '==', '6', NULL);"
                    "INSERT INTO stratum_constraints VALUES (2, 'congressional_district_geoid', '==', '101', NULL);",
                    "INSERT INTO targets VALUES (2, 'snap', 2024, 2, 0, 1.0, 1, NULL, '', '');")
    with pytest.raises(TargetError, match="conflicting geographic constraints"):
        load_targets(path, 2024)


def test_database_opened_read_only(db: Path) -> None:
    before = db.read_bytes()
    load_targets(db, 2024)
    assert db.read_bytes() == before
    assert not list(db.parent.glob("*-journal")) and not list(db.parent.glob("*-wal"))


# --- the embedded default database (its generation needs policyengine-us; its logic and freshness do not) ---


def test_default_builder_levels_split_and_periods(tmp_path: Path) -> None:
    import numpy as np

    from policyengine_us_data.pipeline import default_targets as d

    specs = d.target_specs()
    state_fips = np.array([6, 6, 56, 1])
    weights = np.array([10.0, 20.0, 5.0, 1.0])
    values = {s: np.array([1.0, 2.0, 3.0, 0.0]) for s in specs}
    strata, targets = d.build_targets(specs, values, weights, state_fips, 2024,
                                      lambda v, p, y: 1.0 if p == y else 1.25 ** (y - p))
    path = tmp_path / "default.db"
    write_database(path, strata, targets)
    table = load_targets(path, 2024, uprating=lambda v, p, y: 1.0 if p == y else 1.25 ** (y - p))
    by_name = {r.name: r for r in table.rows}
    assert {r.geo_id for r in table.rows if r.geo_level == "state"} == {6, 56}  # zero totals left out
    ca = [r.value for r in table.rows if r.variable == "household_count" and r.geo_level == "district"
          and r.geo_id // 100 == 6 and not r.domain]
    assert len(ca) == 52 and 0.8 * 50 < sum(ca) < 1.2 * 50  # equal shares of the state total
    national = by_name["national/household_count"].value
    assert 0.8 * 65 < national < 1.2 * 65
    assert by_name["national/person_count/[age<18]"].period == 2022  # uprated back to about its total
    assert 0.8 * 65 < by_name["national/person_count/[age<18]"].value < 1.2 * 65
    assert by_name["state_06/snap"].period == 2023
    assert by_name["national/aca_ptc"].period == 2025
    assert by_name["national/income_tax"].period == 2024
    assert {r.reform_id for r in table.rows} == {0, 1, 2}
    assert sum(not t.active for t in targets) == 2


def test_committed_default_db_matches_synthetic_generator() -> None:
    """Fails when the synthetic dataset changed without regenerating the default database."""
    from policyengine_us_data.pipeline import default_targets as d
    from policyengine_us_data.datasets.synthetic import generate_synthetic
    from policyengine_us_data.utils.hashing import dataset_sha256

    meta = d.read_meta(d.default_targets_path())
    assert meta["dataset_fingerprint"] == dataset_sha256(generate_synthetic()), (
        "the synthetic dataset changed: rerun `python -m policyengine_us_data.pipeline.default_targets`")
    table = load_targets(d.default_targets_path(), int(meta["year"]))
    assert len(table) > 3000


def test_district_codes_normalised_and_checked(tmp_path: Path) -> None:
    strata = [StratumSpec(1, (("congressional_district_geoid", "==", 5600),)),
              StratumSpec(2, (("congressional_district_geoid", "==", 1198),))]
    write_database(tmp_path / "a.db", strata, [TargetSpec(1, "snap", 2024, 1, 1.0), TargetSpec(2, "snap", 2024, 2, 1.0)])
    assert load_targets(tmp_path / "a.db", 2024).names == ["cd_1101/snap", "cd_5601/snap"]
    write_database(tmp_path / "b.db", [StratumSpec(1, (("congressional_district_geoid", "==", 653),))],
                   [TargetSpec(1, "snap", 2024, 1, 1.0)])
    with pytest.raises(TargetError, match="district code 653 is not one of the 436"):
        load_targets(tmp_path / "b.db", 2024)
    write_database(tmp_path / "c.db", [StratumSpec(1, (("state_fips", "==", 72),))], [TargetSpec(1, "snap", 2024, 1, 1.0)])
    with pytest.raises(TargetError, match="state code 72"):
        load_targets(tmp_path / "c.db", 2024)
