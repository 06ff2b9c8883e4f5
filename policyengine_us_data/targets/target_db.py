"""Read upstream's target database (SQLite) into plain records, checking it as we go.

The schema is upstream's, so a real `policy_data.db` works as input:
`strata(stratum_id, definition_hash, parent_stratum_id, notes)`,
`stratum_constraints(stratum_id, constraint_variable, operation, value TEXT, notes)`,
`targets(target_id, variable, period, stratum_id, reform_id, value, active, tolerance, source, notes)`.
The file is opened read-only (a `mode=ro` URI) so loading can never alter a user's database, and
every query is a fixed statement: no value is ever spliced into SQL text. Each defect raises a
`TargetError` naming the table, column and row and saying how to fix it.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

from policyengine_us_data.errors import TargetError
from policyengine_us_data.utils.atomic import atomic_path

#: Operations upstream writes; "=" is an alias of "==" and is normalised to it on read.
OPERATIONS: tuple[str, ...] = ("==", "=", "!=", ">", ">=", "<", "<=")
NUMERIC_OPERATIONS = frozenset({">", ">=", "<", "<="})

#: Columns we read from each table (others, like tolerance and source, may be present or not).
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "strata": ("stratum_id",),
    "stratum_constraints": ("stratum_id", "constraint_variable", "operation", "value"),
    "targets": ("target_id", "variable", "period", "stratum_id", "reform_id", "value", "active"),
}

ConstraintValue = bool | int | float | str
T = TypeVar("T")
MAX_LISTED = 25
"""Problems spelled out in one message; the rest are counted."""


@dataclass(frozen=True)
class RawTarget:
    """One row of the `targets` table with its numeric columns checked."""

    target_id: int
    variable: str
    period: int
    stratum_id: int
    reform_id: int
    value: float
    active: bool


@dataclass(frozen=True)
class RawConstraint:
    """One row of `stratum_constraints` with its operation normalised and its value parsed."""

    stratum_id: int
    variable: str
    operation: str
    value: ConstraintValue


@dataclass(frozen=True)
class RawDatabase:
    """The three tables as plain records."""

    path: str
    stratum_ids: frozenset[int]
    constraints: dict[int, tuple[RawConstraint, ...]]
    targets: tuple[RawTarget, ...]


def parse_value(text: object) -> ConstraintValue:
    """Parse a constraint value the way upstream does: "True"/"False" -> bool, then int, float, else str."""
    if isinstance(text, bool):
        return text
    if isinstance(text, int | float):
        return text
    raw = str(text).strip()
    if raw in ("True", "False"):
        return raw == "True"
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        number = float(raw)
    except ValueError:
        return raw
    return number if math.isfinite(number) else raw


def normalise_operation(operation: object, where: str) -> str:
    """Return the canonical operation, or raise naming the row and the allowed set."""
    op = str(operation).strip() if operation is not None else ""
    if op not in OPERATIONS:
        raise TargetError(
            f"{where}: unknown operation {operation!r}; allowed: {', '.join(OPERATIONS)}. "
            "Fix the row's operation column."
        )
    return "==" if op == "=" else op


def _connect(path: Path) -> sqlite3.Connection:
    if path.is_dir():
        raise TargetError(f"target database {path} is a directory, not a database file; pass the path of the "
                          "policy_data.db file inside it.")
    if not path.is_file():
        raise TargetError(
            f"target database {path} does not exist; pass the path of a policy_data.db or build the "
            "default with `python -m policyengine_us_data.pipeline.default_targets`."
        )
    uri = path.resolve().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
        conn.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.DatabaseError as exc:
        raise TargetError(f"target database {path} is not a readable SQLite database ({exc}); "
                          "pass a SQLite file in upstream's schema.") from exc
    return conn


def _check_schema(conn: sqlite3.Connection, path: Path) -> None:
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for table, columns in REQUIRED_COLUMNS.items():
        if table not in tables:
            raise TargetError(
                f"target database {path}: table '{table}' is missing; the database must use upstream's "
                f"schema (tables: {', '.join(REQUIRED_COLUMNS)})."
            )
        present = {row[0] for row in conn.execute("SELECT name FROM pragma_table_info(?)", (table,))}
        missing = [c for c in columns if c not in present]
        if missing:
            raise TargetError(
                f"target database {path}: table '{table}' lacks column(s) {', '.join(missing)}; "
                f"required: {', '.join(columns)}."
            )


def _as_int(value: object, where: str, column: str) -> int:
    if isinstance(value, bool) or value is None:
        raise TargetError(f"{where}: column '{column}' is {value!r}, not an integer; fix the row.")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        return int(str(value).strip())
    except ValueError:
        raise TargetError(f"{where}: column '{column}' value {value!r} does not parse as an integer; "
                          "fix the row.") from None


def _as_float(value: object, where: str, column: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number):
        raise TargetError(f"{where}: column '{column}' value {value!r} is not a finite number; "
                          "set a number or mark the target inactive (active = 0).")
    return number


def _as_active(value: object, where: str) -> bool:
    if value in (1, 0, True, False):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("1", "true"):
        return True
    if text in ("0", "false"):
        return False
    raise TargetError(f"{where}: column 'active' value {value!r} is not 0/1 or True/False; fix the row.")


def _read_targets(conn: sqlite3.Connection, path: Path, problems: list[str]) -> tuple[RawTarget, ...]:
    query = ("SELECT target_id, variable, period, stratum_id, reform_id, value, active "
             "FROM targets ORDER BY target_id")
    parsed = (_collect(problems, _parse_target, path, *row) for row in conn.execute(query))
    return tuple(t for t in parsed if t is not None)


def _parse_target(path: Path, tid, variable, period, stratum_id, reform_id, value, active) -> RawTarget:
    where = f"{path}: table 'targets', target_id {tid!r}"
    if variable is None or not str(variable).strip():
        raise TargetError(f"{where}: column 'variable' is empty; fix the row.")
    is_active = _as_active(active, where)
    return RawTarget(
        target_id=_as_int(tid, where, "target_id"),
        variable=str(variable).strip(),
        period=_as_int(period, where, "period"),
        stratum_id=_as_int(stratum_id, where, "stratum_id"),
        reform_id=0 if reform_id is None else _as_int(reform_id, where, "reform_id"),
        # an inactive row may hold a placeholder value: it is dropped before it is used
        value=_as_float(value, where, "value") if is_active else math.nan,
        active=is_active,
    )


def _read_constraints(conn: sqlite3.Connection, path: Path,
                      problems: list[str]) -> dict[int, tuple[RawConstraint, ...]]:
    query = ("SELECT rowid, stratum_id, constraint_variable, operation, value FROM stratum_constraints "
             "ORDER BY stratum_id, rowid")
    out: dict[int, list[RawConstraint]] = {}
    for row in conn.execute(query):
        constraint = _collect(problems, _parse_constraint, path, *row)
        if constraint is not None:
            out.setdefault(constraint.stratum_id, []).append(constraint)
    return {sid: tuple(items) for sid, items in out.items()}


def _parse_constraint(path: Path, rowid, stratum_id, variable, operation, value) -> RawConstraint:
    where = f"{path}: table 'stratum_constraints', rowid {rowid} (stratum_id {stratum_id!r})"
    sid = _as_int(stratum_id, where, "stratum_id")
    if variable is None or not str(variable).strip():
        raise TargetError(f"{where}: column 'constraint_variable' is empty; fix the row.")
    op = normalise_operation(operation, where)
    if value is None:
        raise TargetError(f"{where}: column 'value' is NULL; every constraint needs a value.")
    parsed = parse_value(value)
    if op in NUMERIC_OPERATIONS and (isinstance(parsed, str) or isinstance(parsed, bool)):
        raise TargetError(f"{where}: column 'value' {value!r} does not parse as a number, which "
                          f"operation '{op}' needs; fix the value or the operation.")
    return RawConstraint(sid, str(variable).strip(), op, parsed)


def _collect(problems: list[str], parse: Callable[..., T], *args: object) -> T | None:
    """`parse(*args)`, or None with its TargetError's message added to `problems`."""
    try:
        return parse(*args)
    except TargetError as exc:
        problems.append(str(exc))
        return None


def raise_problems(source: str | Path, problems: list[str]) -> None:
    """Raise one TargetError listing every problem (a single one keeps its own wording)."""
    if not problems:
        return
    prefix = f"{source}: "
    if len(problems) == 1:
        only = problems[0]
        raise TargetError(only if only.startswith(prefix) else prefix + only.rstrip(".") + ".")
    items = [p[len(prefix):] if p.startswith(prefix) else p for p in problems]
    shown = items[:MAX_LISTED] + ([f"and {len(items) - MAX_LISTED} more"] if len(items) > MAX_LISTED else [])
    raise TargetError(f"target database {source}: {len(problems)} problems: " + "; ".join(
        item.rstrip(".") for item in shown) + ". Fix them all, then rerun; nothing was built.")


def read_database(db_path: str | Path) -> RawDatabase:
    """Read and check the three tables; raise one `TargetError` listing every defect found."""
    path = Path(db_path)
    conn = _connect(path)
    problems: list[str] = []
    try:
        _check_schema(conn, path)
        try:
            strata = {_as_int(row[0], f"{path}: table 'strata'", "stratum_id")
                      for row in conn.execute("SELECT stratum_id FROM strata")}
            constraints = _read_constraints(conn, path, problems)
            targets = _read_targets(conn, path, problems)
        except sqlite3.DatabaseError as exc:
            raise TargetError(f"target database {path} could not be read ({exc}); is it damaged?") from exc
    finally:
        conn.close()
    problems += _reference_problems(path, strata, targets)
    raise_problems(path, problems)
    return RawDatabase(str(path), frozenset(strata), constraints, targets)


def _reference_problems(path: Path, strata: set[int], targets: tuple[RawTarget, ...]) -> list[str]:
    """Active targets must point at existing strata and be unique per (variable, period, stratum, reform)."""
    problems = []
    seen: dict[tuple[str, int, int, int], int] = {}
    for t in targets:
        if not t.active:
            continue
        if t.stratum_id not in strata:
            problems.append(f"{path}: table 'targets', target_id {t.target_id}: stratum_id {t.stratum_id} "
                            "is not in table 'strata'; add the stratum or fix the target.")
        key = (t.variable, t.period, t.stratum_id, t.reform_id)
        if key in seen:
            problems.append(
                f"{path}: table 'targets': target_ids {seen[key]} and {t.target_id} are duplicates (variable "
                f"{t.variable!r}, period {t.period}, stratum_id {t.stratum_id}, reform_id {t.reform_id}); "
                "delete one or mark it inactive."
            )
        seen.setdefault(key, t.target_id)
    return problems


# --- writing (the embedded default database and tests build databases in the same schema) ---

SCHEMA_SQL = """
CREATE TABLE strata (
    stratum_id INTEGER PRIMARY KEY,
    definition_hash VARCHAR(64) NOT NULL,
    parent_stratum_id INTEGER REFERENCES strata (stratum_id),
    notes VARCHAR
);
CREATE TABLE stratum_constraints (
    stratum_id INTEGER NOT NULL REFERENCES strata (stratum_id),
    constraint_variable VARCHAR NOT NULL,
    operation VARCHAR NOT NULL,
    value VARCHAR NOT NULL,
    notes VARCHAR,
    PRIMARY KEY (stratum_id, constraint_variable, operation)
);
CREATE TABLE targets (
    target_id INTEGER PRIMARY KEY,
    variable VARCHAR NOT NULL,
    period INTEGER NOT NULL,
    stratum_id INTEGER NOT NULL REFERENCES strata (stratum_id),
    reform_id INTEGER NOT NULL DEFAULT 0,
    value FLOAT,
    active BOOLEAN NOT NULL DEFAULT 1,
    tolerance FLOAT,
    source VARCHAR,
    notes VARCHAR,
    UNIQUE (variable, period, stratum_id, reform_id)
);
"""


@dataclass(frozen=True)
class StratumSpec:
    """A stratum to write: its id, constraints as (variable, operation, value), parent and notes."""

    stratum_id: int
    constraints: tuple[tuple[str, str, ConstraintValue], ...] = ()
    parent_stratum_id: int | None = None
    notes: str = ""


@dataclass(frozen=True)
class TargetSpec:
    """A target to write, in upstream's columns."""

    target_id: int
    variable: str
    period: int
    stratum_id: int
    value: float
    reform_id: int = 0
    active: bool = True
    tolerance: float | None = None
    source: str = ""
    notes: str = ""


def _value_text(value: ConstraintValue) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return repr(value) if isinstance(value, float) else str(value)


def definition_hash(constraints: tuple[tuple[str, str, ConstraintValue], ...]) -> str:
    """sha256 of the sorted constraint triples, as upstream identifies a stratum by its definition."""
    text = "\n".join(sorted(f"{v}|{op}|{_value_text(x)}" for v, op, x in constraints))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_database(path: str | Path, strata: list[StratumSpec] | tuple[StratumSpec, ...],
                   targets: list[TargetSpec] | tuple[TargetSpec, ...],
                   meta: tuple[str, dict[str, str]] | None = None) -> None:
    """Write a database in upstream's schema atomically (built in a temp file, then moved).

    `meta` = (table name, key/value dict) adds one extra table that readers of the schema ignore.
    """
    with atomic_path(path) as tmp:
        conn = sqlite3.connect(tmp)
        try:
            conn.executescript(SCHEMA_SQL)
            conn.executemany(
                "INSERT INTO strata (stratum_id, definition_hash, parent_stratum_id, notes) VALUES (?, ?, ?, ?)",
                [(s.stratum_id, definition_hash(s.constraints), s.parent_stratum_id, s.notes) for s in strata])
            conn.executemany(
                "INSERT INTO stratum_constraints (stratum_id, constraint_variable, operation, value, notes) "
                "VALUES (?, ?, ?, ?, ?)",
                [(s.stratum_id, v, op, _value_text(x), None) for s in strata for v, op, x in s.constraints])
            conn.executemany(
                "INSERT INTO targets (target_id, variable, period, stratum_id, reform_id, value, active, "
                "tolerance, source, notes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(t.target_id, t.variable, t.period, t.stratum_id, t.reform_id, t.value, int(t.active),
                  t.tolerance, t.source, t.notes) for t in targets])
            if meta is not None:
                _write_meta(conn, *meta)
            conn.commit()
        finally:
            conn.close()


def _write_meta(conn: sqlite3.Connection, table: str, values: dict[str, str]) -> None:
    if not table.isidentifier():
        raise ValueError(f"bad meta table name {table!r}")
    conn.execute(f"CREATE TABLE {table} (key VARCHAR PRIMARY KEY, value VARCHAR)")
    conn.executemany(f"INSERT INTO {table} (key, value) VALUES (?, ?)", sorted(values.items()))
