"""The cell rules of the matrix (domain.md), in one place.

A row's value for a household: domain constraints are ANDed per person; an entity qualifies when
any member does; amounts are computed on their own entity, masked, then summed to the household
(masking after aggregating would leak non-qualifying dollars); `person_count` counts qualifying
persons and other `*_count` variables qualifying entities; a reform row is the household's income
tax under the reform minus baseline income tax. The kernel and the default-target generator both
use it, so the targets and the matrix can never disagree on what a cell means.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import numpy as np

from policyengine_us_data.targets.constraints import any_member, person_mask, sum_to_household
from policyengine_us_data.datasets.household_data import HouseholdData


class CellRule(Protocol):
    """What a row (or a group of rows sharing a value vector) says about its cells."""

    variable: str
    domain: tuple
    reform_id: int


def is_count_variable(variable: str) -> bool:
    """`person_count`, `household_count`, `tax_unit_count`, ...: counted from structure, not simulated."""
    return variable.endswith("_count")


def household_values(rule: CellRule, data: HouseholdData, out: Any, entity_of: Callable[[str], str]) -> np.ndarray:
    """The rule's unweighted value per household of `data`, from a simulation's output `out`."""
    pmask = person_mask(out.per_person, rule.domain, data.n_persons)
    if rule.reform_id > 0:
        entity = "tax_unit"
        values = out.income_tax[rule.variable].astype(np.float64) - out.income_tax[""].astype(np.float64)
    else:
        entity = entity_of(rule.variable)
        values = None if is_count_variable(rule.variable) else out.own_entity[rule.variable].astype(np.float64)
    if entity == "person":
        weights = pmask.astype(np.float64) if values is None else values * pmask
        return sum_to_household(weights, data.person_entity_index("household"), data.n_households)
    if entity == "household":
        person_entity, entity_household, n_entities = (
            data.person_entity_index("household"), np.arange(data.n_households), data.n_households)
    else:
        person_entity = data.person_entity_index(entity)
        entity_household, n_entities = data.entity_household_index(entity), data.n_entities(entity)
    qualifies = any_member(pmask, person_entity, n_entities)
    weights = qualifies.astype(np.float64) if values is None else values * qualifies
    return sum_to_household(weights, entity_household, data.n_households)
