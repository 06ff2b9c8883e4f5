"""Calibration targets: the matrix's rows, read from a database in upstream's schema.

`load_targets` keeps active targets, chooses one period per (stratum, variable, reform_id), splits
geographic constraints (which only select columns) from domain constraints (evaluated per person),
uprates values to the build year and sorts rows into their fixed order: geo level (national, state,
district), variable, reform_id, geographic id. The row index is the position after that sort, so
everything downstream (cache, shards, lineage) can rely on it.

Unlike upstream, a target or constraint variable that policyengine-us does not know is an error
listing every such variable, never a row silently filled with zeros.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Collection, Iterable

from policyengine_us_data.datasets.geography import SEATS
from policyengine_us_data.targets.target_checks import (
    VariableTypeLookup,
    constraint_value_problems,
    target_value_problems,
    unknown_variable_problems,
)
from policyengine_us_data.targets.target_db import RawDatabase, RawTarget, raise_problems, read_database
from policyengine_us_data.targets.uprating import UpratingFunction, policyengine_uprating
from policyengine_us_data.errors import TargetError
from policyengine_us_data.geo_levels import GEO_LEVELS, level_code
from policyengine_us_data.utils.atomic import atomic_write_json

logger = logging.getLogger(__name__)

__all__ = ["Constraint", "TargetRow", "TargetTable", "load_targets", "policyengine_uprating",
           "GEO_LEVELS", "GEO_VARIABLES"]

STATE_VARIABLE = "state_fips"
DISTRICT_VARIABLE = "congressional_district_geoid"
GEO_VARIABLES = frozenset({STATE_VARIABLE, DISTRICT_VARIABLE})
# Lower bounds before upper bounds so a band reads `[age>=18,age<65]`.
_OP_RANK = {"==": 0, "!=": 1, ">": 2, ">=": 3, "<": 4, "<=": 5}
TABLE_FORMAT = "target_table/1"
_DISTRICTS = frozenset(f * 100 + d for f, seats in SEATS.items() for d in range(1, seats + 1))


def _format_value(value: bool | int | float | str) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return repr(value) if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Constraint:
    """One domain constraint, e.g. `snap > 0`; value is bool, int, float or str."""

    variable: str
    operation: str
    value: bool | int | float | str

    @property
    def label(self) -> str:
        return f"{self.variable}{self.operation}{_format_value(self.value)}"

    def sort_key(self) -> tuple[str, int, tuple[int, Any]]:
        """Variable, then lower bounds before upper bounds, then the value (numbers numerically)."""
        value = self.value
        if isinstance(value, bool):
            typed: tuple[int, Any] = (0, int(value))
        elif isinstance(value, int | float):
            typed = (1, float(value))
        else:
            typed = (2, str(value))
        return (self.variable, _OP_RANK.get(self.operation, 9), typed)

    def to_json(self) -> list[Any]:
        return [self.variable, self.operation, self.value]

    @classmethod
    def from_json(cls, item: Any) -> Constraint:
        variable, operation, value = item
        return cls(str(variable), str(operation), value)


@dataclass(frozen=True)
class TargetRow:
    """One matrix row: a target's uprated value, its geography and its domain."""

    row: int
    target_id: int
    stratum_id: int
    variable: str
    period: int
    reform_id: int
    value: float
    source_value: float
    geo_level: str
    geo_id: int
    geographic_id: str
    domain: tuple[Constraint, ...]
    name: str

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "domain"}
        out["domain"] = [c.to_json() for c in self.domain]
        return out

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> TargetRow:
        fields = dict(item)
        fields["domain"] = tuple(Constraint.from_json(c) for c in fields["domain"])
        return cls(**fields)


@dataclass(frozen=True)
class TargetTable:
    """The sorted target rows plus the year they describe and notes on how they were made."""

    rows: tuple[TargetRow, ...]
    year: int | None = None
    notes: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rows]

    @property
    def values(self) -> list[float]:
        return [r.value for r in self.rows]

    def to_json(self) -> dict[str, Any]:
        return {"format": TABLE_FORMAT, "year": self.year, "notes": list(self.notes),
                "rows": [r.to_json() for r in self.rows]}

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON: equal tables give equal fingerprints on any machine."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def save_json(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_json())

    @classmethod
    def load_json(cls, path: str | Path) -> TargetTable:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if data.get("format") != TABLE_FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, expected {TABLE_FORMAT!r}")
            rows = tuple(TargetRow.from_json(r) for r in data["rows"])
            notes = tuple(str(note) for note in data.get("notes", ()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TargetError(f"target table {path} is unreadable ({exc}); rebuild it from the database.") from exc
        if [r.row for r in rows] != list(range(len(rows))):
            raise TargetError(f"target table {path}: row indices are not 0..n-1; rebuild it.")
        return cls(rows, data.get("year"), notes)

    def records(self) -> list[dict[str, Any]]:
        """One plain dict per row, with upstream's `domain_variable` column (the constraint variables): the rows
        of upstream's `targets_df`."""
        records = []
        for r in self.rows:
            variables = sorted({c.variable for c in r.domain})
            records.append({
                "row": r.row, "target_id": r.target_id, "stratum_id": r.stratum_id, "name": r.name,
                "variable": r.variable, "period": r.period, "reform_id": r.reform_id, "geo_level": r.geo_level,
                "geo_id": r.geo_id, "geographic_id": r.geographic_id, "domain_variable": ",".join(variables),
                "domain": ",".join(c.label for c in r.domain), "source_value": r.source_value, "value": r.value,
            })
        return records


def choose_periods(targets: Iterable[RawTarget], year: int) -> list[RawTarget]:
    """Per (stratum, variable, reform_id): the latest period <= year, else the earliest."""
    best: dict[tuple[int, str, int], RawTarget] = {}
    for t in targets:
        key = (t.stratum_id, t.variable, t.reform_id)
        held = best.get(key)
        if held is None or _period_rank(t.period, year) > _period_rank(held.period, year):
            best[key] = t
    return list(best.values())


def _period_rank(period: int, year: int) -> tuple[int, int]:
    return (1, period) if period <= year else (0, -period)


def _split_constraints(db: RawDatabase, stratum_id: int) -> tuple[str, int, str, tuple[Constraint, ...]]:
    """(geo_level, geo_id, geographic_id, sorted domain) of one stratum."""
    state: set[int] = set()
    district: set[int] = set()
    domain: list[Constraint] = []
    for c in db.constraints.get(stratum_id, ()):
        if c.variable in GEO_VARIABLES:
            where = f"{db.path}: table 'stratum_constraints', stratum_id {stratum_id}, {c.variable}"
            if c.operation != "==" or isinstance(c.value, bool) or not isinstance(c.value, int):
                raise TargetError(f"{where}: geographic constraints must be '== <integer code>', got "
                                  f"'{c.operation} {c.value!r}'; fix the row.")
            (state if c.variable == STATE_VARIABLE else district).add(c.value)
        else:
            domain.append(Constraint(c.variable, c.operation, c.value))
    if len(state) > 1 or len(district) > 1 or (district and state and next(iter(district)) // 100 not in state):
        raise TargetError(f"{db.path}: stratum_id {stratum_id} has conflicting geographic constraints "
                          f"(state_fips {sorted(state)}, district {sorted(district)}); fix the stratum.")
    domain_sorted = tuple(sorted(set(domain), key=Constraint.sort_key))
    if district:
        geoid = _check_geo(db, stratum_id, normalise_district(district.pop()), "district")
        return "district", geoid, f"{geoid:04d}", domain_sorted
    if state:
        fips = _check_geo(db, stratum_id, state.pop(), "state")
        return "state", fips, f"{fips:02d}", domain_sorted
    return "national", 0, "US", domain_sorted


def normalise_district(geoid: int) -> int:
    """At-large seats and DC's delegate (census district 00 or 98) are district 1 in our geography."""
    state, number = divmod(geoid, 100)
    if number in (0, 98) and SEATS.get(state) == 1:
        return state * 100 + 1
    return geoid


def _check_geo(db: RawDatabase, stratum_id: int, code: int, level: str) -> int:
    """A code outside the clone geography would give a row of zeros: refuse it instead."""
    valid = SEATS if level == "state" else _DISTRICTS
    if code not in valid:
        raise TargetError(f"{db.path}: stratum_id {stratum_id}: {level} code {code} is not one of the "
                          f"{len(valid)} {level}s of the clone geography (2020 apportionment); fix the constraint.")
    return code


def _name(level: str, geographic_id: str, variable: str, reform_id: int, domain: tuple[Constraint, ...]) -> str:
    prefix = {"national": "national", "state": f"state_{geographic_id}", "district": f"cd_{geographic_id}"}[level]
    parts = [prefix, variable]
    if domain:
        parts.append("[" + ",".join(c.label for c in domain) + "]")
    if reform_id:
        parts.append(f"reform_{reform_id}")
    return "/".join(parts)


def _variables_used(rows: list[TargetRow]) -> dict[str, set[int]]:
    """Every target and domain variable of `rows` -> the target ids using it."""
    used: dict[str, set[int]] = {}
    for r in rows:
        for variable in [r.variable] + [c.variable for c in r.domain]:
            used.setdefault(variable, set()).add(r.target_id)
    return used


def _sort_key(r: TargetRow) -> tuple[Any, ...]:
    return (level_code(r.geo_level), r.variable, r.reform_id, r.geo_id,
            tuple(c.sort_key() for c in r.domain), r.stratum_id, r.target_id)


def _disambiguate(rows: list[TargetRow]) -> list[TargetRow]:
    """Distinct strata with identical constraints would share a name; suffix the stratum id to those."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.name] = counts.get(r.name, 0) + 1
    clashes = {n for n, k in counts.items() if k > 1}
    if clashes:
        logger.warning("%d target names shared by several strata; suffixing stratum ids", len(clashes))
    return [replace(r, name=f"{r.name}/stratum_{r.stratum_id}") if r.name in clashes else r for r in rows]


def check_geo_levels(geo_levels: Collection[str] | None) -> None:
    """Refuse a geo-level filter naming a level that does not exist (cheap: before any database read)."""
    bad = sorted(set(geo_levels or ()) - set(GEO_LEVELS))
    if bad:
        raise TargetError(f"unknown geo level(s) {bad} in the filter; use {', '.join(GEO_LEVELS)}.")


def load_targets(db_path: str | Path, year: int, *, variables: Collection[str] | None = None,
                 geo_levels: Collection[str] | None = None, target_ids: Collection[int] | None = None,
                 known_variables: Collection[str] | None = None,
                 uprating: UpratingFunction | None = None,
                 variable_type: VariableTypeLookup | None = None) -> TargetTable:
    """Read, choose periods, filter, check, uprate and sort the targets of `db_path` for `year`.

    Filters apply after period choice; the unknown-variable and constraint-type checks (`variable_type`: name ->
    VariableType, None skips it) apply to the rows kept, so a filter can leave out targets this policyengine-us
    version cannot compute. Every problem found is listed in one TargetError.
    """
    check_geo_levels(geo_levels)
    db = read_database(db_path)
    rows, problems = _select_rows(db, year, variables, geo_levels, target_ids, uprating)
    if known_variables is not None:
        problems += unknown_variable_problems(_variables_used(rows), set(known_variables))
    if variable_type is not None:
        problems += constraint_value_problems(((r.stratum_id, c) for r in rows for c in r.domain), variable_type)
    problems += target_value_problems(rows)
    raise_problems(Path(db_path), problems)
    rows.sort(key=_sort_key)
    rows = [replace(r, row=i) for i, r in enumerate(_disambiguate(rows))]
    notes = tuple(getattr(uprating, "notes", ())) if uprating is not None else ("values not uprated",)
    return TargetTable(tuple(rows), year, notes)


def _select_rows(db: RawDatabase, year: int, variables: Collection[str] | None, geo_levels: Collection[str] | None,
                 target_ids: Collection[int] | None,
                 uprating: UpratingFunction | None) -> tuple[list[TargetRow], list[str]]:
    """The unsorted rows the filters keep, and the problems of their strata."""
    rows: list[TargetRow] = []
    problems: list[str] = []
    for t in choose_periods((t for t in db.targets if t.active), year):
        try:
            level, geo_id, geographic_id, domain = _split_constraints(db, t.stratum_id)
        except TargetError as exc:
            problems.append(str(exc))
            continue
        if variables is not None and t.variable not in variables:
            continue
        if geo_levels is not None and level not in geo_levels:
            continue
        if target_ids is not None and t.target_id not in target_ids:
            continue
        factor = 1.0 if uprating is None else float(uprating(t.variable, t.period, year))
        rows.append(TargetRow(-1, t.target_id, t.stratum_id, t.variable, t.period, t.reform_id,
                              t.value * factor, t.value, level, geo_id, geographic_id, domain,
                              _name(level, geographic_id, t.variable, t.reform_id, domain)))
    return rows, list(dict.fromkeys(problems))
