"""The constraint cache and the vectorised kernels that evaluate domains on a chunk.

Many target rows differ only in geography (one per district), so rows sharing (variable, domain,
reform_id) form a `RowGroup`: a chunk computes the group's value vector once and each row then
picks the columns in its geography. The cache holds, per row, geo level and id and reform id,
plus the groups and the variables a chunk must simulate. It is stored as JSON (groups, domains)
plus npz (per-row arrays), never pickle; the JSON records the npz's sha256 so a mismatched pair
is caught on load.

Kernels follow the cell rules: constraints are ANDed per person; an entity qualifies if any member
does; entity values go to households with `np.bincount`, never a Python loop over households.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from policyengine_us_data.targets.target_db import OPERATIONS
from policyengine_us_data.targets.targets import Constraint, TargetTable
from policyengine_us_data.geo_levels import level_codes
from policyengine_us_data.errors import InputError
from policyengine_us_data.utils.atomic import atomic_write_bytes, atomic_write_json

__all__ = ["OPERATIONS", "apply_operation", "person_mask", "any_member", "sum_to_household", "RowGroup",
           "ConstraintCache", "CACHE_JSON", "CACHE_NPZ"]

CACHE_JSON = "constraint_cache.json"
CACHE_NPZ = "constraint_cache.npz"
CACHE_FORMAT = "constraint_cache/1"
_ORDERING = frozenset({">", ">=", "<", "<="})


def _as_comparable(values: np.ndarray, rhs: Any, op: str) -> tuple[np.ndarray, Any]:
    """Bring array and right-hand side to one comparable kind, or raise saying why they differ."""
    kind = values.dtype.kind
    if kind in "OUS":  # strings, bytes, or decoded enum objects
        if kind == "S":
            values = values.astype(str)
        elif kind == "O":
            values = values.astype(str)
        if not isinstance(rhs, str) or isinstance(rhs, bool):
            rhs = str(rhs)
        if op in _ORDERING:
            raise InputError(f"operation '{op}' is not defined for string/enum values (compared with {rhs!r}); "
                             "use == or !=.")
        return values, rhs
    if isinstance(rhs, str):
        raise InputError(f"cannot compare numeric values with the string {rhs!r}; the constraint value must "
                         "be a number or True/False.")
    return values, rhs


def apply_operation(values: np.ndarray, op: str, rhs: Any) -> np.ndarray:
    """`values <op> rhs` element-wise as a bool array, for numeric, bool and string/enum arrays."""
    values = np.asarray(values)
    values, rhs = _as_comparable(values, rhs, op)
    if op in ("==", "="):
        out = values == rhs
    elif op == "!=":
        out = values != rhs
    elif op == ">":
        out = values > rhs
    elif op == ">=":
        out = values >= rhs
    elif op == "<":
        out = values < rhs
    elif op == "<=":
        out = values <= rhs
    else:
        raise InputError(f"unknown operation {op!r}; allowed: {', '.join(OPERATIONS)}.")
    return np.asarray(out, dtype=bool)


def person_mask(person_values: Mapping[str, np.ndarray], domain: Sequence[Constraint], n_persons: int) -> np.ndarray:
    """AND of the domain's constraints per person; an empty domain selects everyone."""
    mask = np.ones(n_persons, dtype=bool)
    for c in domain:
        if c.variable not in person_values:
            raise InputError(f"constraint variable {c.variable!r} was not computed for this chunk; "
                             "add it to the simulation request.")
        values = np.asarray(person_values[c.variable])
        if values.shape != (n_persons,):
            raise InputError(f"constraint variable {c.variable!r} has shape {values.shape}, expected "
                             f"({n_persons},) person values.")
        mask &= apply_operation(values, c.operation, c.value)
    return mask


def _check_index(index: np.ndarray, n: int, what: str) -> np.ndarray:
    index = np.asarray(index)
    if index.ndim != 1 or index.dtype.kind not in "iu":
        raise InputError(f"{what} must be a 1-d integer array")
    if len(index) and (index.min() < 0 or index.max() >= n):
        raise InputError(f"{what} points outside 0..{n - 1}")
    return index


def any_member(person_mask: np.ndarray, person_entity_index: np.ndarray, n_entities: int) -> np.ndarray:
    """Per entity: does any of its members qualify? (bool, length n_entities)."""
    mask = np.asarray(person_mask, dtype=bool)
    index = _check_index(person_entity_index, n_entities, "person_entity_index")
    if len(index) != len(mask):
        raise InputError(f"person mask has {len(mask)} entries but the entity index {len(index)}")
    return np.bincount(index, weights=mask, minlength=n_entities) > 0


def sum_to_household(values: np.ndarray, entity_household_index: np.ndarray, n_households: int) -> np.ndarray:
    """Sum entity values into their households (float64, length n_households)."""
    values = np.asarray(values, dtype=np.float64)
    index = _check_index(entity_household_index, n_households, "entity_household_index")
    if len(index) != len(values):
        raise InputError(f"{len(values)} values but {len(index)} household links")
    return np.bincount(index, weights=values, minlength=n_households).astype(np.float64, copy=False)


@dataclass(frozen=True, eq=False)
class RowGroup:
    """Rows that share one value vector: same variable, domain and reform_id."""

    variable: str
    domain: tuple[Constraint, ...]
    reform_id: int
    rows: np.ndarray  # int32, ascending

    @property
    def key(self) -> tuple[str, tuple[Constraint, ...], int]:
        return (self.variable, self.domain, self.reform_id)

    def to_json(self) -> dict[str, Any]:
        return {"variable": self.variable, "domain": [c.to_json() for c in self.domain],
                "reform_id": self.reform_id}


@dataclass(frozen=True, eq=False)
class ConstraintCache:
    """Per-row geography and reform, the row groups, and the variables a chunk must compute."""

    geo_level: np.ndarray  # int8: 0 national, 1 state, 2 district
    geo_id: np.ndarray  # int32: 0, state fips or district geoid
    reform_id: np.ndarray  # int32
    groups: tuple[RowGroup, ...]

    @property
    def n_rows(self) -> int:
        return len(self.geo_level)

    @property
    def target_variables(self) -> tuple[str, ...]:
        return tuple(sorted({g.variable for g in self.groups}))

    @property
    def constraint_variables(self) -> tuple[str, ...]:
        return tuple(sorted({c.variable for g in self.groups for c in g.domain}))

    @property
    def reform_variables(self) -> tuple[str, ...]:
        return tuple(sorted({g.variable for g in self.groups if g.reform_id > 0}))

    @classmethod
    def from_targets(cls, table: TargetTable) -> ConstraintCache:
        """Group rows by (variable, domain, reform_id), groups in order of their first row."""
        members: dict[tuple[str, tuple[Constraint, ...], int], list[int]] = {}
        for r in table.rows:
            members.setdefault((r.variable, r.domain, r.reform_id), []).append(r.row)
        groups = tuple(RowGroup(v, d, rid, np.array(rows, dtype=np.int32)) for (v, d, rid), rows in members.items())
        return cls(
            geo_level=level_codes(r.geo_level for r in table.rows),
            geo_id=np.array([r.geo_id for r in table.rows], dtype=np.int32),
            reform_id=np.array([r.reform_id for r in table.rows], dtype=np.int32),
            groups=groups,
        )

    def _group_of_row(self) -> np.ndarray:
        out = np.full(self.n_rows, -1, dtype=np.int32)
        for i, g in enumerate(self.groups):
            out[g.rows] = i
        return out

    def _npz_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, geo_level=self.geo_level, geo_id=self.geo_id, reform_id=self.reform_id,
                 group_of_row=self._group_of_row())
        return buffer.getvalue()

    def _json(self, npz_sha256: str) -> dict[str, Any]:
        return {"format": CACHE_FORMAT, "n_rows": self.n_rows, "npz_sha256": npz_sha256,
                "groups": [g.to_json() for g in self.groups], "target_variables": list(self.target_variables),
                "constraint_variables": list(self.constraint_variables),
                "reform_variables": list(self.reform_variables)}

    def fingerprint(self) -> str:
        """sha256 over the per-row arrays and the groups: equal caches give equal fingerprints."""
        npz_hash = hashlib.sha256(self._npz_bytes()).hexdigest()
        text = json.dumps(self._json(npz_hash), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def save(self, directory: str | Path) -> None:
        """Write the npz, then the JSON that names its hash (each atomically)."""
        root = Path(directory)
        data = self._npz_bytes()
        atomic_write_bytes(root / CACHE_NPZ, data)
        atomic_write_json(root / CACHE_JSON, self._json(hashlib.sha256(data).hexdigest()))

    @classmethod
    def load(cls, directory: str | Path) -> ConstraintCache:
        """Read and validate a cache written by `save`; defects raise InputError naming the file."""
        root = Path(directory)
        try:
            meta = json.loads((root / CACHE_JSON).read_text(encoding="utf-8"))
            data = (root / CACHE_NPZ).read_bytes()
        except (OSError, ValueError) as exc:
            raise InputError(f"constraint cache in {root} is missing or unreadable ({exc}); rerun the "
                             "`constraints` step.") from None
        try:
            return _from_parts(meta, data)
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError, OSError) as exc:
            raise InputError(f"constraint cache in {root} is damaged ({exc}); rerun the `constraints` "
                             "step.") from None


def _from_parts(meta: dict[str, Any], data: bytes) -> ConstraintCache:
    if meta.get("format") != CACHE_FORMAT:
        raise ValueError(f"format {meta.get('format')!r}, expected {CACHE_FORMAT!r}")
    if hashlib.sha256(data).hexdigest() != meta["npz_sha256"]:
        raise ValueError(f"{CACHE_NPZ} does not match {CACHE_JSON} (sha256 differs)")
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in ("geo_level", "geo_id", "reform_id", "group_of_row")}
    n = int(meta["n_rows"])
    if any(a.shape != (n,) for a in arrays.values()):
        raise ValueError("per-row arrays do not have n_rows entries")
    specs = meta["groups"]
    group_of_row = arrays["group_of_row"]
    if n and (group_of_row.min() < 0 or group_of_row.max() >= len(specs)):
        raise ValueError("a row belongs to no group")
    groups = tuple(
        RowGroup(str(s["variable"]), tuple(Constraint.from_json(c) for c in s["domain"]), int(s["reform_id"]),
                 np.flatnonzero(group_of_row == i).astype(np.int32))
        for i, s in enumerate(specs)
    )
    return ConstraintCache(arrays["geo_level"].astype(np.int8), arrays["geo_id"].astype(np.int32),
                           arrays["reform_id"].astype(np.int32), groups)
