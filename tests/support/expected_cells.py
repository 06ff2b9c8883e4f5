"""An independent, deliberately plain computation of matrix cells.

It shares no code with the kernel's vectorised path: households are copied with Python loops,
constraints are evaluated person by person with the `operator` module, and each cell rule of
domain.md is spelled out per household. Tests compare the kernel's matrix against it.
"""

from __future__ import annotations

import operator
from typing import Sequence

import numpy as np

from policyengine_us_data.kernel.simulator import SimulationRequest
from policyengine_us_data.datasets.household_data import ENTITIES, HouseholdData

OPS = {"==": operator.eq, "=": operator.eq, "!=": operator.ne, ">": operator.gt, ">=": operator.ge,
       "<": operator.lt, "<=": operator.le}


def one_household_per_column(base: HouseholdData, geography, columns: Sequence[int],
                             takeup: bool = False) -> HouseholdData:
    """A dataset with one household per column, copied by loops, under the column's geography.

    With `takeup`, every take-up input is drawn per entity from the documented key
    (variable, original household id, clone index, position among the household's entities)."""
    a = base.arrays
    n_records = base.n_households
    person_arrays = [k for k in a if base.entity_of(k) == "person"]
    out: dict[str, list] = {k: [] for k in a}
    next_id = {e: 0 for e in ("person",) + ENTITIES}
    for col in columns:
        record = col % n_records
        hh_id = a["household_id"][record]
        members = [p for p in range(base.n_persons) if a["person_household_id"][p] == hh_id]
        remap = {e: {} for e in ENTITIES}
        for e in ENTITIES:
            for p in members:
                old = a[f"person_{e}_id"][p]
                if old not in remap[e]:
                    remap[e][old] = next_id[e]
                    next_id[e] += 1
                    position = int(np.flatnonzero(a[f"{e}_id"] == old)[0])
                    for k in a:
                        if base.entity_of(k) == e and k != f"{e}_id":
                            out[k].append(a[k][position])
                    out[f"{e}_id"].append(remap[e][old])
        for p in members:
            for k in person_arrays:
                if k == "person_id":
                    out[k].append(next_id["person"])
                elif k.startswith("person_") and k.endswith("_id"):
                    out[k].append(remap[k[len("person_"):-len("_id")]][a[k][p]])
                else:
                    out[k].append(a[k][p])
            next_id["person"] += 1
        out["state_fips"][-1] = int(geography.state_fips[col])
        out["congressional_district_geoid"][-1] = int(geography.cd_geoid[col])
        out["household_weight"][-1] = 1.0
    arrays = {k: np.asarray(v, dtype=a[k].dtype) for k, v in out.items()}
    data = HouseholdData(arrays=arrays, period=base.period)
    if takeup:
        data = _draw_takeup(data, base, columns)
    return data


def _draw_takeup(data: HouseholdData, base: HouseholdData, columns: Sequence[int]) -> HouseholdData:
    from policyengine_us_data.kernel.takeup import TAKEUP_ENTITIES, TAKEUP_RATES, keyed_uniforms

    n_records = base.n_households
    arrays = dict(data.arrays)
    for variable, entity in TAKEUP_ENTITIES.items():
        link = data.arrays["person_household_id"] if entity == "person" else None
        owners = []  # the household position of each entity, in the entity array's order
        if entity == "person":
            owners = [int(np.flatnonzero(data.arrays["household_id"] == h)[0]) for h in link]
        else:
            for e_id in data.arrays[f"{entity}_id"]:
                first = int(np.flatnonzero(data.arrays[f"person_{entity}_id"] == e_id)[0])
                owners.append(int(np.flatnonzero(data.arrays["household_id"] == data.arrays["person_household_id"][first])[0]))
        seen: dict[int, int] = {}
        draws = []
        for owner in owners:
            member = seen.get(owner, 0)
            seen[owner] = member + 1
            col = columns[owner]
            original_id = base.arrays["household_id"][col % n_records]
            u = keyed_uniforms(variable, np.array([original_id]), np.array([col // n_records]), np.array([member]))
            draws.append(bool(u[0] < TAKEUP_RATES[variable]))
        arrays[variable] = np.array(draws, dtype=bool)
    return HouseholdData(arrays=arrays, period=data.period)


def _member_lists(data: HouseholdData, entity: str) -> list[list[int]]:
    ids = list(data.arrays[f"{entity}_id"])
    members: list[list[int]] = [[] for _ in ids]
    for p, e in enumerate(data.arrays[f"person_{entity}_id"]):
        members[ids.index(e)].append(p)
    return members


def expected_cells(base, geography, table, simulator, columns: Sequence[int],
                   takeup: bool = False) -> dict[tuple[int, int], float]:
    """{(row, column): value} for every non-zero cell of the given columns."""
    data = one_household_per_column(base, geography, columns, takeup=takeup)
    rows = table.rows
    targets = sorted({r.variable for r in rows if r.reform_id == 0 and not r.variable.endswith("_count")})
    person_vars = sorted({c.variable for r in rows for c in r.domain})
    reforms = sorted({r.variable for r in rows if r.reform_id > 0})
    out = simulator.compute(data, SimulationRequest(tuple(targets), tuple(person_vars), tuple(reforms)))
    members = {e: _member_lists(data, e) for e in ENTITIES}
    cells: dict[tuple[int, int], float] = {}
    for i, col in enumerate(columns):
        hh_persons = members["household"][i]
        for row in rows:
            if not _in_geography(row, geography, col):
                continue
            value = _cell(row, data, out, simulator, members, hh_persons)
            if value != 0:
                cells[(row.row, col)] = value
    return cells


def _in_geography(row, geography, col: int) -> bool:
    if row.geo_level == "state":
        return int(geography.state_fips[col]) == row.geo_id
    if row.geo_level == "district":
        return int(geography.cd_geoid[col]) == row.geo_id
    return True


def _qualifies(row, out, person: int) -> bool:
    return all(OPS[c.operation](out.per_person[c.variable][person], c.value) for c in row.domain)


def _cell(row, data, out, simulator, members, hh_persons: list[int]) -> float:
    entity = "tax_unit" if row.reform_id > 0 else simulator.entity_of(row.variable)
    if row.reform_id > 0:
        values = out.income_tax[row.variable].astype(float) - out.income_tax[""].astype(float)
    elif row.variable.endswith("_count"):
        values = None
    else:
        values = out.own_entity[row.variable].astype(float)
    total = 0.0
    if entity == "person":
        for p in hh_persons:
            if _qualifies(row, out, p):
                total += 1.0 if values is None else float(values[p])
        return total
    for e_index, e_members in enumerate(members[entity]):
        if e_members[0] not in hh_persons:
            continue
        if any(_qualifies(row, out, p) for p in e_members):
            total += 1.0 if values is None else float(values[e_index])
    return total
