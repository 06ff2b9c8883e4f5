"""Chunk plans and results: the small, picklable records that cross process and container edges.

A plan kind fixes an order of all the matrix's columns; a chunk is the slice [col_start, col_end)
of that order, so a plan stays a few integers however many columns it holds, and a worker derives
the chunk's global columns from the geography it already loads (`chunk_columns`):

- `contiguous`: the identity order, so a chunk is the column range itself (upstream's semantics).
- `state` (the default): state-major order. policyengine-us evaluates each state present in a
  simulation, so a chunk of ~51 states costs several times one of a single state. States are ranked
  by column count (largest first, ties by fips); a state with more than `chunk_size` columns is
  split into equal single-state chunks; the smaller ones, in rank order, are grouped whole into few
  chunks of at most `chunk_size` columns, of even sizes. Everything follows from the geography's
  state codes alone.

The matrix's column order (`c = clone * n_records + record`) is the same under both kinds. A result
is what the kernel reports back. Both are plain dataclasses of builtins so they pickle for a process
pool and serialise to JSON for Modal and the manifest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from policyengine_us_data.errors import InputError

CONTIGUOUS, STATE = "contiguous", "state"
PLAN_KINDS = (STATE, CONTIGUOUS)
DEFAULT_PLAN_KIND = STATE


@dataclass(frozen=True)
class ChunkPlan:
    """One chunk: the slice [col_start, col_end) of its kind's column order, and the shard it must produce.

    For `contiguous` the slice is the column range itself; for `state` use `chunk_columns`.
    """

    chunk_id: int
    col_start: int
    col_end: int
    shard_path: str
    lineage_signature: str
    kind: str = CONTIGUOUS

    @property
    def n_columns(self) -> int:
        return self.col_end - self.col_start

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "ChunkPlan":
        return cls(
            chunk_id=int(obj["chunk_id"]),
            col_start=int(obj["col_start"]),
            col_end=int(obj["col_end"]),
            shard_path=str(obj["shard_path"]),
            lineage_signature=str(obj["lineage_signature"]),
            kind=check_plan_kind(str(obj.get("kind", CONTIGUOUS))),
        )


@dataclass(frozen=True)
class ChunkResult:
    """One finished chunk, the one shape of a chunk's outcome end to end: what the kernel reports, what the
    manifest records (with `attempts`), what `dispatch.json` lists and what the run report reads. `reused` marks
    a chunk a resume kept from an earlier run rather than computed now ([col_start, col_end) as in its plan)."""

    chunk_id: int
    col_start: int
    col_end: int
    nnz: int
    households: int
    persons: int
    seconds: float
    peak_rss_mb: float
    checksum: str = ""
    worker: str = ""
    started: float = 0.0
    finished: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    attempts: int = 1
    reused: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: Any) -> "ChunkResult":
        """The result a `to_json` dict describes; ValueError for anything else (a manifest is read back)."""
        if not isinstance(obj, dict) or set(obj) - set(cls.__dataclass_fields__):
            raise ValueError(f"malformed chunk result {obj!r}")
        result = cls(**obj)
        ints = (result.chunk_id, result.col_start, result.col_end, result.nnz, result.households, result.persons,
                result.attempts)
        numbers = (result.seconds, result.peak_rss_mb, result.started, result.finished)
        if (not all(type(v) is int for v in ints) or not all(isinstance(v, (int, float)) for v in numbers)
                or not isinstance(result.checksum, str) or not isinstance(result.worker, str)
                or not isinstance(result.timings, dict) or not isinstance(result.reused, bool)):
            raise ValueError(f"malformed chunk result {obj!r}")
        return result


def partition_columns(n_columns: int, chunk_size: int) -> list[tuple[int, int, int]]:
    """Split [0, n_columns) into contiguous (chunk_id, start, end) ranges; the last may be partial."""
    if chunk_size <= 0:
        raise InputError(f"chunk size must be a positive integer, got {chunk_size}: pass --chunk-size N with N >= 1")
    if n_columns <= 0:
        raise InputError(f"the matrix has no columns (n_columns={n_columns}): check --n-clones and the dataset")
    starts = range(0, n_columns, chunk_size)
    return [(i, s, min(s + chunk_size, n_columns)) for i, s in enumerate(starts)]


def check_plan_kind(kind: str) -> str:
    """The kind itself, or an InputError naming the choices."""
    if kind not in PLAN_KINDS:
        raise InputError(f"unknown chunk plan {kind!r}: use --chunk-plan {' or '.join(PLAN_KINDS)}")
    return kind


def _state_ranking(state_fips: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(states, their column counts, each state's rank): largest first, ties by fips."""
    states, counts = np.unique(np.asarray(state_fips), return_counts=True)
    ranked = np.lexsort((states, -counts))
    rank = np.empty(len(states), dtype=np.int64)
    rank[ranked] = np.arange(len(states))
    return states, counts, rank


_ORDER_CACHE: list = []  # [(state_fips array, its state-major order)]: one geography per process


def state_major_order(state_fips: np.ndarray) -> np.ndarray:
    """Every column, grouped by state in rank order, ascending within a state (cached per array)."""
    if _ORDER_CACHE and _ORDER_CACHE[0][0] is state_fips:
        return _ORDER_CACHE[0][1]
    states, _, rank = _state_ranking(state_fips)
    key = rank[np.searchsorted(states, state_fips)].astype(np.uint8 if len(states) < 256 else np.int64)
    order = np.argsort(key, kind="stable")  # a radix sort for uint8 keys: ~50 ms for 5 M columns
    order.flags.writeable = False
    _ORDER_CACHE[:] = [(state_fips, order)]
    return order


def state_cuts(state_fips: np.ndarray, chunk_size: int) -> list[tuple[int, int]]:
    """(start, end) slices of the state-major order: large states split evenly, small ones grouped."""
    _, counts, rank = _state_ranking(state_fips)
    counts = [int(n) for n in counts[np.argsort(rank)]]
    large = [n for n in counts if n > chunk_size]  # ranked largest first, so these lead the order
    cuts: list[tuple[int, int]] = []
    position = 0
    for n in large:
        parts = -(-n // chunk_size)
        edges = position + (np.arange(parts + 1) * n) // parts
        cuts += [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]
        position += n
    for group in _balanced_groups(counts[len(large):], chunk_size):
        cuts.append((position, position + sum(group)))
        position += sum(group)
    return cuts


def _balanced_groups(counts: list[int], chunk_size: int) -> list[list[int]]:
    """Consecutive whole states in few groups of at most `chunk_size` columns, of even sizes.

    With k groups, each state joins the group its midpoint falls in (of k equal spans); k grows
    from ceil(total / chunk_size) until every group fits. One state per group always fits.
    """
    total = sum(counts)
    if not total:
        return []
    sizes = np.asarray(counts, dtype=np.int64)
    twice_midpoints = 2 * (np.cumsum(sizes) - sizes) + sizes  # integers: the same groups on every machine
    for k in range(-(-total // chunk_size), len(counts) + 1):
        index = twice_midpoints * k // (2 * total)
        groups = [[n for n, j in zip(counts, index) if j == g] for g in range(k)]
        groups = [g for g in groups if g]
        if all(sum(g) <= chunk_size for g in groups):
            return groups
    return [[n] for n in counts]


def partition_plan(kind: str, state_fips: np.ndarray, chunk_size: int) -> list[tuple[int, int, int]]:
    """(chunk_id, start, end) slices of the kind's column order covering every column exactly once."""
    contiguous = partition_columns(len(state_fips), chunk_size)  # also checks the size and the column count
    if check_plan_kind(kind) == CONTIGUOUS:
        return contiguous
    return [(i, start, end) for i, (start, end) in enumerate(state_cuts(state_fips, chunk_size))]


def chunk_columns(kind: str, state_fips: np.ndarray, col_start: int, col_end: int) -> np.ndarray:
    """The chunk's global column indices, ascending (int64)."""
    if kind == CONTIGUOUS:
        return np.arange(col_start, col_end, dtype=np.int64)
    check_plan_kind(kind)
    return np.sort(state_major_order(state_fips)[col_start:col_end]).astype(np.int64)
