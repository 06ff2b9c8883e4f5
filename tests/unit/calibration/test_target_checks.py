"""Target-database checks against the simulator's variable types, and every problem listed in one message."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest

from policyengine_us_data.targets.target_checks import VariableType, variable_types_of
from policyengine_us_data.targets.targets import load_targets
from policyengine_us_data.errors import TargetError
from tests.support.target_db import make_target_db

TYPES = {
    "age": VariableType("number"),
    "snap": VariableType("number"),
    "is_disabled": VariableType("bool"),
    "filing_status": VariableType("enum", ("SINGLE", "JOINT", "SEPARATE")),
    "county_name": VariableType("string"),
}
KNOWN = set(TYPES) | {"person_count", "household_count", "tax_unit_count"}


def _load(tmp_path: Path, rows, **kwargs):
    db = make_target_db(tmp_path / "t.db", rows)
    return load_targets(db, 2024, known_variables=KNOWN, variable_type=TYPES.get, **kwargs)


@pytest.mark.parametrize("constraint, words", [
    (("age", "==", "1; DROP TABLE targets"), "the variable is numeric"),
    (("is_disabled", "==", "2"), "the variable is boolean"),
    (("is_disabled", "==", "yes"), "the variable is boolean"),
    (("filing_status", "==", "MARRIED"), "give one of SINGLE, JOINT, SEPARATE"),
    (("filing_status", "==", "1"), "give one of SINGLE"),
    (("county_name", ">", "5"), "holds text; use == or !="),
])
def test_a_value_that_does_not_fit_its_variable_is_refused(tmp_path, constraint, words):
    with pytest.raises(TargetError) as caught:
        _load(tmp_path, [("person_count", [constraint], 1.0, 0)])
    assert words in str(caught.value) and constraint[0] in str(caught.value)


@pytest.mark.parametrize("constraint", [
    ("age", ">=", "18"), ("age", "<", "64.5"), ("is_disabled", "==", "True"), ("is_disabled", "!=", "0"),
    ("filing_status", "==", "JOINT"), ("filing_status", "!=", "SINGLE"), ("county_name", "==", "Travis"),
])
def test_values_that_fit_are_accepted(tmp_path, constraint):
    assert len(_load(tmp_path, [("person_count", [constraint], 1.0, 0)])) == 1


def test_every_problem_is_listed_in_one_message(tmp_path):
    rows = [("person_count", [("age", "==", "old")], 1.0, 0), ("person_count", [("is_disabled", "==", "7")], 1.0, 0),
            ("snapp", [], 1.0, 0)]
    with pytest.raises(TargetError) as caught:
        _load(tmp_path, rows)
    message = str(caught.value)
    assert message.startswith(f"target database {tmp_path / 't.db'}: 3 problems:")
    assert "age == 'old'" in message and "is_disabled == 7" in message
    assert "snapp" in message and "did you mean snap" in message
    assert len(message.splitlines()) == 1


def test_row_defects_of_the_database_are_listed_together(tmp_path):
    db = make_target_db(tmp_path / "t.db", [("person_count", [("age", "~=", "18")], 1.0, 0),
                                            ("household_count", [("snap", ">", "lots")], 1.0, 0)])
    con = sqlite3.connect(db)
    con.execute("UPDATE targets SET period = 'soon' WHERE target_id = 2")
    con.commit()
    con.close()
    with pytest.raises(TargetError) as caught:
        load_targets(db, 2024)
    message = str(caught.value)
    assert "3 problems" in message and "'~='" in message and "'lots'" in message and "'soon'" in message


def test_a_target_value_that_uprates_to_infinity_is_refused(tmp_path):
    def explode(variable, period, year):
        return math.inf

    with pytest.raises(TargetError, match="uprated to inf, not a finite number"):
        _load(tmp_path, [("household_count", [], 1.0, 0)], uprating=explode)


def test_types_come_from_the_tax_benefit_system():
    class Status:  # an Enum's members have names
        pass

    members = [SimpleNamespace(name="SINGLE"), SimpleNamespace(name="JOINT")]
    system = SimpleNamespace(variables={
        "age": SimpleNamespace(value_type=float, possible_values=None),
        "is_blind": SimpleNamespace(value_type=bool, possible_values=None),
        "filing_status": SimpleNamespace(value_type=Status, possible_values=members),
        "county_str": SimpleNamespace(value_type=str, possible_values=None),
    })
    lookup = variable_types_of(system)
    assert lookup("age") == VariableType("number")
    assert lookup("is_blind") == VariableType("bool")
    assert lookup("filing_status") == VariableType("enum", ("SINGLE", "JOINT"))
    assert lookup("county_str") == VariableType("string")
    assert lookup("nope") is None
