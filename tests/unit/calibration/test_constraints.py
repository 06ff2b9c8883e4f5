"""Operators, person masks, entity kernels (against brute-force loops) and the constraint cache."""

from __future__ import annotations

import operator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policyengine_us_data.targets.constraints import (
    CACHE_JSON,
    CACHE_NPZ,
    OPERATIONS,
    ConstraintCache,
    any_member,
    apply_operation,
    person_mask,
    sum_to_household,
)
from policyengine_us_data.targets.target_db import StratumSpec, TargetSpec, write_database
from policyengine_us_data.targets.targets import Constraint, load_targets
from policyengine_us_data.errors import InputError

PY_OPS = {"==": operator.eq, "=": operator.eq, "!=": operator.ne, ">": operator.gt, ">=": operator.ge,
          "<": operator.lt, "<=": operator.le}


@pytest.mark.parametrize("op", OPERATIONS)
def test_every_operator_numeric(op: str) -> None:
    values = np.array([-1.5, 0.0, 2.0, 3.0, 10.0])
    for rhs in (0, 2, 2.5):
        expected = [PY_OPS[op](v, rhs) for v in values]
        assert apply_operation(values, op, rhs).tolist() == expected
    ints = np.array([17, 18, 19, 65])
    assert apply_operation(ints, op, 18).tolist() == [PY_OPS[op](v, 18) for v in ints.tolist()]


@pytest.mark.parametrize("op", OPERATIONS)
def test_every_operator_bool(op: str) -> None:
    values = np.array([True, False, True])
    for rhs in (True, False):
        assert apply_operation(values, op, rhs).tolist() == [PY_OPS[op](v, rhs) for v in values.tolist()]


@pytest.mark.parametrize("op", OPERATIONS)
def test_every_operator_string(op: str) -> None:
    for values in (np.array(["SINGLE", "JOINT", "SINGLE"]), np.array([b"SINGLE", b"JOINT", b"SINGLE"]),
                   np.array(["SINGLE", "JOINT", "SINGLE"], dtype=object)):
        if op in ("==", "=", "!="):
            expected = [PY_OPS[op](v, "SINGLE") for v in ["SINGLE", "JOINT", "SINGLE"]]
            assert apply_operation(values, op, "SINGLE").tolist() == expected
        else:
            with pytest.raises(InputError, match="not defined for string"):
                apply_operation(values, op, "SINGLE")


def test_mismatched_kinds_and_unknown_operation() -> None:
    with pytest.raises(InputError, match="cannot compare numeric values"):
        apply_operation(np.array([1, 2]), "==", "two")
    with pytest.raises(InputError, match="unknown operation"):
        apply_operation(np.array([1, 2]), "=>", 1)


def test_person_mask_and_and_empty() -> None:
    values = {"age": np.array([10, 20, 40, 70]), "is_female": np.array([True, False, True, True])}
    assert person_mask(values, (), 4).tolist() == [True] * 4
    domain = (Constraint("age", ">=", 18), Constraint("age", "<", 65), Constraint("is_female", "==", True))
    assert person_mask(values, domain, 4).tolist() == [False, False, True, False]
    with pytest.raises(InputError, match="'snap' was not computed"):
        person_mask(values, (Constraint("snap", ">", 0),), 4)
    with pytest.raises(InputError, match="shape"):
        person_mask(values, (Constraint("age", ">", 0),), 5)


@st.composite
def households(draw):
    """Random persons grouped into entities grouped into households (entity ids may be empty)."""
    n_households = draw(st.integers(1, 12))
    n_entities = draw(st.integers(1, 20))
    n_persons = draw(st.integers(0, 40))
    person_entity = np.array(draw(st.lists(st.integers(0, n_entities - 1), min_size=n_persons,
                                           max_size=n_persons)), dtype=np.int64)
    entity_household = np.array(draw(st.lists(st.integers(0, n_households - 1), min_size=n_entities,
                                               max_size=n_entities)), dtype=np.int64)
    ages = np.array(draw(st.lists(st.integers(0, 90), min_size=n_persons, max_size=n_persons)))
    amounts = np.array(draw(st.lists(st.floats(-1e6, 1e6), min_size=n_entities, max_size=n_entities)))
    lo, hi = draw(st.integers(0, 90)), draw(st.integers(0, 90))
    return n_households, n_entities, person_entity, entity_household, ages, amounts, lo, hi


@settings(max_examples=200, deadline=None)
@given(households())
def test_kernels_match_brute_force(case) -> None:
    n_households, n_entities, person_entity, entity_household, ages, amounts, lo, hi = case
    n_persons = len(ages)
    domain = (Constraint("age", ">=", lo), Constraint("age", "<", hi))
    mask = person_mask({"age": ages}, domain, n_persons)
    qualifies = any_member(mask, person_entity, n_entities)
    totals = sum_to_household(amounts * qualifies, entity_household, n_households)
    counts = sum_to_household(mask.astype(float), entity_household[person_entity], n_households)
    for h in range(n_households):
        expected_total, expected_count = 0.0, 0
        for e in range(n_entities):
            if entity_household[e] != h:
                continue
            members = [p for p in range(n_persons) if person_entity[p] == e]
            if any(lo <= ages[p] < hi for p in members):
                expected_total += amounts[e]
            expected_count += sum(lo <= ages[p] < hi for p in members)
        assert totals[h] == pytest.approx(expected_total, rel=1e-9, abs=1e-6)
        assert counts[h] == expected_count


def test_kernel_input_errors() -> None:
    with pytest.raises(InputError, match="outside"):
        any_member(np.array([True]), np.array([3]), 2)
    with pytest.raises(InputError, match="values but"):
        sum_to_household(np.array([1.0, 2.0]), np.array([0]), 1)


@pytest.fixture
def table(tmp_path: Path):
    strata = [StratumSpec(1), StratumSpec(2, (("snap", ">", 0),))]
    strata += [StratumSpec(10 + f, (("state_fips", "==", f),)) for f in (1, 6)]
    strata += [StratumSpec(20 + f, (("state_fips", "==", f), ("snap", ">", 0))) for f in (1, 6)]
    strata += [StratumSpec(30, (("congressional_district_geoid", "==", 601), ("age", ">=", 18)))]
    targets = [TargetSpec(1, "snap", 2024, 1, 1.0), TargetSpec(2, "household_count", 2024, 2, 2.0),
               TargetSpec(3, "eitc", 2024, 1, 3.0, reform_id=1), TargetSpec(4, "snap", 2024, 11, 4.0),
               TargetSpec(5, "snap", 2024, 16, 5.0), TargetSpec(6, "household_count", 2024, 21, 6.0),
               TargetSpec(7, "household_count", 2024, 26, 7.0), TargetSpec(8, "person_count", 2024, 30, 8.0)]
    write_database(tmp_path / "t.db", strata, targets)
    return load_targets(tmp_path / "t.db", 2024)


def test_cache_groups(table) -> None:
    cache = ConstraintCache.from_targets(table)
    assert table.names == ["national/eitc/reform_1", "national/household_count/[snap>0]", "national/snap",
                           "state_01/household_count/[snap>0]", "state_06/household_count/[snap>0]",
                           "state_01/snap", "state_06/snap", "cd_0601/person_count/[age>=18]"]
    assert cache.geo_level.tolist() == [0, 0, 0, 1, 1, 1, 1, 2]
    assert cache.geo_id.tolist() == [0, 0, 0, 1, 6, 1, 6, 601]
    assert cache.reform_id.tolist() == [1, 0, 0, 0, 0, 0, 0, 0]
    assert [(g.variable, g.rows.tolist()) for g in cache.groups] == [
        ("eitc", [0]), ("household_count", [1, 3, 4]), ("snap", [2, 5, 6]), ("person_count", [7])]
    assert cache.target_variables == ("eitc", "household_count", "person_count", "snap")
    assert cache.constraint_variables == ("age", "snap")
    assert cache.reform_variables == ("eitc",)


def test_cache_save_load(table, tmp_path: Path) -> None:
    cache = ConstraintCache.from_targets(table)
    cache.save(tmp_path / "state")
    back = ConstraintCache.load(tmp_path / "state")
    assert back.fingerprint() == cache.fingerprint()
    assert [(g.key, g.rows.tolist()) for g in back.groups] == [(g.key, g.rows.tolist()) for g in cache.groups]
    assert np.array_equal(back.geo_id, cache.geo_id) and back.geo_level.dtype == np.int8
    (tmp_path / "state" / CACHE_NPZ).write_bytes(b"garbage")
    with pytest.raises(InputError, match="damaged"):
        ConstraintCache.load(tmp_path / "state")
    (tmp_path / "state" / CACHE_JSON).unlink()
    with pytest.raises(InputError, match="missing or unreadable"):
        ConstraintCache.load(tmp_path / "state")
