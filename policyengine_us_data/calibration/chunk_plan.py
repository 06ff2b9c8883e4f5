"""Chunk plans and results: the small, picklable records that cross process and container edges.

A plan names one contiguous column range and where its shard goes; a result is what the kernel
reports back. Both are plain dataclasses of builtins so they pickle for a process pool and
serialise to JSON for Modal and the manifest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from policyengine_us_data.errors import InputError


@dataclass(frozen=True)
class ChunkPlan:
    """One chunk of columns [col_start, col_end) and the shard it must produce."""

    chunk_id: int
    col_start: int
    col_end: int
    shard_path: str
    lineage_signature: str

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
        )


@dataclass(frozen=True)
class ChunkResult:
    """What the kernel reports for one finished chunk."""

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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "ChunkResult":
        fields = {k: obj[k] for k in cls.__dataclass_fields__ if k in obj}
        return cls(**fields)


def partition_columns(n_columns: int, chunk_size: int) -> list[tuple[int, int, int]]:
    """Split [0, n_columns) into contiguous (chunk_id, start, end) ranges; the last may be partial."""
    if chunk_size <= 0:
        raise InputError(f"chunk size must be a positive integer, got {chunk_size}: pass --chunk-size N with N >= 1")
    if n_columns <= 0:
        raise InputError(f"the matrix has no columns (n_columns={n_columns}): check --n-clones and the dataset")
    starts = range(0, n_columns, chunk_size)
    return [(i, s, min(s + chunk_size, n_columns)) for i, s in enumerate(starts)]
