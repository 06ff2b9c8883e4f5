"""Value validation of a PolicyEngine h5 dataset, streamed in slices so memory stays bounded.

Shapes and dtypes are checked from the file's metadata before any data is read, so a small file that declares
a huge variable is refused without allocating it. Values are then read `SLICE_ROWS` at a time: numbers must be
finite, weights non-negative and not all zero, ids integral, in range and unique per entity, links must point at
existing ids, `state_fips` must be one of the 50 states or DC. Every problem is collected (variable, count, first
positions) and all of them are raised together as one `DatasetError`, so a user fixes the file in one pass.
"""

from __future__ import annotations

from typing import Mapping

import h5py
import numpy as np

from policyengine_us_data.datasets.household_data import ALL_ENTITIES, ENTITIES, KNOWN_ENTITIES, id_name, link_name
from policyengine_us_data.errors import DatasetError
from policyengine_us_data.states import STATES

SLICE_ROWS = 1 << 20
"""Values read at a time: 8 MB of float64 per slice, whatever the variable's declared length."""
MAX_ROWS = 50_000_000
"""Most instances of one entity a dataset may declare (PolicyEngine's largest inputs hold ~10^5 households)."""
MAX_ID = 2**31 - 1
"""Ids must fit PolicyEngine's int32 entity indices."""
STATE_FIPS = np.array(sorted(fips for _, fips, _, _ in STATES), dtype=np.int64)
_SHOWN_POSITIONS = 3
_SHOWN_PROBLEMS = 25
_READABLE_KINDS = "biufS"


def validate_h5_nodes(nodes: Mapping[str, h5py.Dataset], source: str) -> None:
    """Raise one `DatasetError` listing every problem in `nodes` (variable name -> h5 dataset of one period).

    Structure (required ids and links, one dimension, readable dtype, lengths matching an entity count) is
    checked from metadata first; values are read only when the structure is sound.
    """
    problems = _structure_problems(nodes)
    if not problems:
        problems = _value_problems(nodes)
    if problems:
        shown = problems[:_SHOWN_PROBLEMS]
        more = f"; and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        raise DatasetError(f"{source}: {len(problems)} problem(s) in the dataset: {'; '.join(shown)}{more}. "
                           "Fix the file (or regenerate it); nothing was built.")


# ----------------------------------------------------------------------------- structure (metadata only)
def _structure_problems(nodes: Mapping[str, h5py.Dataset]) -> list[str]:
    problems = []
    required = ["person_id"] + [n for e in ENTITIES for n in (id_name(e), link_name(e))]
    problems += [f"required variable {name!r} is missing (every dataset needs person_id and, for each of "
                 f"{', '.join(ENTITIES)}, E_id and person_E_id)" for name in required if name not in nodes]
    for name, node in nodes.items():
        if node.ndim != 1:
            problems.append(f"{name}: shape {node.shape}; every variable must be one-dimensional (one value per "
                            "person or entity): flatten or drop it")
        elif not _readable(node.dtype):
            problems.append(f"{name}: dtype {node.dtype} is not one PolicyEngine reads (use bool, int, float or "
                            "fixed-width strings)")
    if problems:
        return problems
    counts = {e: int(nodes[id_name(e)].shape[0]) for e in ALL_ENTITIES}
    for entity, count in counts.items():
        if count > MAX_ROWS:
            problems.append(f"{id_name(entity)}: declares {count:,} {entity}s, more than the {MAX_ROWS:,} this "
                            "builder accepts; the file is damaged or not a household dataset")
    if problems:
        return problems
    for name, node in nodes.items():
        problems += _length_problem(name, int(node.shape[0]), counts)
    return problems


def _readable(dtype: np.dtype) -> bool:
    return dtype.kind in _READABLE_KINDS or h5py.check_string_dtype(dtype) is not None


def _length_problem(name: str, length: int, counts: dict[str, int]) -> list[str]:
    entity = KNOWN_ENTITIES.get(name)
    if entity is not None and length != counts[entity]:
        return [f"variable {name!r} has length {length:,} but {entity}-level variables need length "
                f"{counts[entity]:,} (the number of {id_name(entity)} values): fix or drop the variable"]
    if entity is None and length not in counts.values():
        return [f"variable {name!r} has length {length:,}, which matches no entity count {counts}: fix or drop "
                "the variable"]
    return []


# ----------------------------------------------------------------------------- values (streamed)
def _entity_of(name: str, length: int, counts: dict[str, int]) -> str:
    """The entity whose rows a position counts, for messages ("row" when the length is ambiguous)."""
    known = KNOWN_ENTITIES.get(name)
    if known is not None:
        return known
    matches = [e for e, n in counts.items() if n == length]
    return matches[0] if len(matches) == 1 else "row"


def _slices(node: h5py.Dataset):
    """(offset, values) for consecutive slices of at most SLICE_ROWS values."""
    for start in range(0, node.shape[0], SLICE_ROWS):
        yield start, node[start:start + SLICE_ROWS]


class _Finding:
    """Count and first positions of one kind of bad value in one variable."""

    def __init__(self, name: str, what: str, entity: str) -> None:
        self.name, self.what, self.entity = name, what, entity
        self.count = 0
        self.positions: list[int] = []

    def add(self, offset: int, bad: np.ndarray) -> None:
        hits = np.flatnonzero(bad)
        self.count += int(len(hits))
        room = _SHOWN_POSITIONS - len(self.positions)
        self.positions += [offset + int(i) for i in hits[:max(room, 0)]]

    def text(self) -> str | None:
        if not self.count:
            return None
        where = ", ".join(str(p) for p in self.positions) + (", ..." if self.count > len(self.positions) else "")
        plural = "s" if self.count > 1 else ""
        return f"{self.name}: {self.count:,} {self.what} at {self.entity}{plural} {where}"


def _value_problems(nodes: Mapping[str, h5py.Dataset]) -> list[str]:
    counts = {e: int(nodes[id_name(e)].shape[0]) for e in ALL_ENTITIES}
    problems: list[str] = []
    ids_ok: dict[str, bool] = {}
    for name, node in nodes.items():
        entity = _entity_of(name, int(node.shape[0]), counts)
        found = _scan(name, node, entity)
        problems += found
        if name in {id_name(e) for e in ALL_ENTITIES} | {link_name(e) for e in ENTITIES}:
            ids_ok[name] = not found
    for e in ALL_ENTITIES:
        if not ids_ok.get(id_name(e)):
            continue
        duplicates, sorted_ids = _unique_ids(nodes[id_name(e)], e)
        problems += duplicates
        if e != "person" and ids_ok.get(link_name(e)):
            problems += _dangling_links(sorted_ids, nodes[link_name(e)], e)
    return problems


def _scan(name: str, node: h5py.Dataset, entity: str) -> list[str]:
    """One streamed pass over a variable, checking what its name and dtype call for."""
    kind = node.dtype.kind
    is_id = name in {id_name(e) for e in ALL_ENTITIES} or name in {link_name(e) for e in ENTITIES}
    is_weight = name in {f"{e}_weight" for e in ALL_ENTITIES}
    finite = _Finding(name, "NaN", entity)
    fractional = _Finding(name, "non-integer id(s)", entity)
    out_of_range = _Finding(name, f"id(s) outside 0..{MAX_ID:,}", entity)
    negative = _Finding(name, "negative weight(s)", entity)
    not_state = _Finding(name, "value(s) that are not a state FIPS code of the 50 states or DC", entity)
    positive_total = 0.0
    for offset, values in _slices(node):
        if kind == "f":
            bad = ~np.isfinite(values)
            _describe_non_finite(finite, values, bad)
            finite.add(offset, bad)
            values = np.where(bad, 0, values)
        if is_id and kind in "iuf":
            fractional.add(offset, values != np.floor(values) if kind == "f" else np.zeros(len(values), bool))
            out_of_range.add(offset, (values < 0) | (values > MAX_ID))
        if is_weight and kind in "iuf":
            negative.add(offset, values < 0)
            positive_total += float(np.sum(values[values > 0]))
        if name == "state_fips":
            not_state.add(offset, ~np.isin(_as_codes(values), STATE_FIPS))
    found = [t for t in (f.text() for f in (finite, fractional, out_of_range, negative, not_state)) if t]
    if is_id and kind not in "iuf":
        found.append(f"{name}: dtype {node.dtype}, but ids must be integers")
    if is_weight and node.shape[0] and not positive_total and not found:
        found.append(f"{name}: every weight is 0, so no {entity} would count: give them positive weights")
    return found


def _describe_non_finite(finding: _Finding, values: np.ndarray, bad: np.ndarray) -> None:
    """Name the kind of non-finite value when one kind is all there is ("NaN", "inf")."""
    if not bad.any():
        return
    kinds = {"NaN" if np.isnan(v) else "inf" for v in values[bad][:1000]}
    label = "NaN" if kinds == {"NaN"} else "inf" if kinds == {"inf"} else "NaN or infinite value(s)"
    if finding.count and label != finding.what:
        label = "NaN or infinite value(s)"
    finding.what = label


def _as_codes(values: np.ndarray) -> np.ndarray:
    """State codes as int64; anything that is not an integral number becomes -1 (never a state)."""
    if values.dtype.kind == "S":
        text = np.char.strip(values)
        digits = np.char.isdigit(text) & (np.char.str_len(text) <= 3)
        out = np.full(len(values), -1, dtype=np.int64)
        out[digits] = text[digits].astype(np.int64)
        return out
    if values.dtype.kind == "f":
        integral = values == np.floor(values)
        return np.where(integral, values, -1).astype(np.int64)
    return values.astype(np.int64) if values.dtype.kind in "iu" else np.full(len(values), -1, np.int64)


def _read_ids(node: h5py.Dataset) -> np.ndarray:
    """The whole id column as int64 (bounded: MAX_ROWS ids, already checked integral and in range)."""
    out = np.empty(node.shape[0], dtype=np.int64)
    for offset, values in _slices(node):
        out[offset:offset + len(values)] = values
    return out


def _unique_ids(node: h5py.Dataset, entity: str) -> tuple[list[str], np.ndarray]:
    """(the duplicate-id problem if any, the ids sorted). A stable sort, not np.unique: 10x faster on 10^6 ids."""
    ids = _read_ids(node)
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    repeated = np.zeros(len(ids), dtype=bool)
    repeated[order[1:]] = ids[1:] == ids[:-1]
    finding = _Finding(id_name(entity), "duplicate id(s) (each repeats an earlier one)", entity)
    finding.add(0, repeated)
    text = finding.text()
    return ([f"{text}: give every {entity} a unique id"] if text else []), ids


def _dangling_links(ids: np.ndarray, link_node: h5py.Dataset, entity: str) -> list[str]:
    """Links (streamed) that are not among the entity's sorted `ids`."""
    finding = _Finding(link_name(entity), f"link(s) that point at ids that do not exist in {id_name(entity)}",
                       "person")
    example = None
    for offset, values in _slices(link_node):
        links = values.astype(np.int64)
        found = np.minimum(np.searchsorted(ids, links), max(len(ids) - 1, 0))
        missing = ids[found] != links if len(ids) else np.ones(len(links), bool)
        finding.add(offset, missing)
        if example is None and missing.any():
            example = int(links[missing][0])
    text = finding.text()
    return [f"{text} (e.g. id {example}): fix the link or add the missing {entity}"] if text else []
