"""What a shard is: its members and their dtypes, its header, its file name; the writer and the readers in
`shards.shards` share these (the format itself is described there)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from policyengine_us_data.errors import ShardError
from policyengine_us_data.shards.column_sets import columns_problem
from policyengine_us_data.utils.index_dtype import INT32_LIMIT, index_dtype

FORMAT = "policyengine-us-data-shard"
FORMAT_VERSION = 2  # 2: the `columns` member (a chunk is a set of columns)
CHECKSUM_ALGORITHM = "xxh3_64"
MEMBERS = ("header", "row_counts", "columns", "rows", "cols", "vals")
HEADER_KEYS = ("chunk_id", "col_start", "col_end", "n_rows", "n_cols", "nnz")
def col_dtype(n_cols: int) -> np.dtype:
    """int32 column indices while they fit (what scipy keeps), else int64."""
    return index_dtype(n_cols)


def shard_dtypes(n_cols: int) -> dict[str, str]:
    """The dtype of every member for a matrix with `n_cols` columns."""
    return {
        "rows": "int32",
        "cols": col_dtype(n_cols).name,
        "vals": "float64",
        "row_counts": "int64",
        "columns": col_dtype(n_cols).name,
        "header": "uint8",
    }


def shard_path(directory: str | os.PathLike, chunk_id: int) -> Path:
    """`directory/chunk_{id:06d}.npz`, the one naming rule for shards."""
    return Path(directory) / f"chunk_{int(chunk_id):06d}.npz"


MANIFEST_FILE = "chunk_manifest.json"


def remove_shards(directory: str | os.PathLike) -> None:
    """Delete a chunk directory's shards and its manifest, the one place shards are ever deleted (other files
    there are left alone)."""
    root = Path(directory)
    for path in root.glob("chunk_*.npz"):
        path.unlink()
    (root / MANIFEST_FILE).unlink(missing_ok=True)


@dataclass(frozen=True, eq=False)
class ShardHeader:
    """What a header-only read gives: enough to plan and to preallocate the assembly."""

    path: str
    chunk_id: int
    col_start: int
    col_end: int
    n_rows: int
    n_cols: int
    nnz: int
    dtypes: dict[str, str]
    lineage_signature: str
    checksum: str
    row_counts: np.ndarray = field(repr=False)
    columns: np.ndarray = field(repr=False)
    format_version: int = FORMAT_VERSION

    @property
    def n_columns(self) -> int:
        return self.col_end - self.col_start


@dataclass(frozen=True, eq=False)
class Shard:
    """A fully read and verified shard."""

    header: ShardHeader
    rows: np.ndarray
    cols: np.ndarray
    vals: np.ndarray


def header_from_meta(path: str, meta: Any, row_counts: np.ndarray, columns: np.ndarray) -> ShardHeader:
    """Validate the header JSON against itself and the row counts."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ShardError(path, "header is not a shard header")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ShardError(path, f"unsupported shard format version {meta.get('format_version')!r}")
    values = {key: meta.get(key) for key in HEADER_KEYS}
    if not all(type(v) is int for v in values.values()):
        raise ShardError(path, f"header fields {', '.join(HEADER_KEYS)} must be integers")
    for key in ("lineage_signature", "checksum"):
        if not isinstance(meta.get(key), str):
            raise ShardError(path, f"header field {key} missing or not a string")
    n_rows, n_cols = values["n_rows"], values["n_cols"]
    if not (0 <= n_rows < INT32_LIMIT and 0 <= values["col_start"] <= values["col_end"] <= n_cols):
        raise ShardError(path, f"header range invalid: {values}")
    if meta.get("dtypes") != shard_dtypes(n_cols) or meta.get("checksum_algorithm") != CHECKSUM_ALGORITHM:
        raise ShardError(path, f"header dtypes {meta.get('dtypes')!r} are not {shard_dtypes(n_cols)!r}")
    if row_counts.shape != (n_rows,):
        raise ShardError(path, f"row_counts has length {row_counts.size}, header says n_rows={n_rows}")
    if n_rows and (row_counts.min() < 0 or int(row_counts.sum()) != values["nnz"]):
        raise ShardError(path, f"row_counts are negative or do not sum to nnz={values['nnz']}")
    if not n_rows and values["nnz"]:
        raise ShardError(path, "a shard with no rows claims non-zeros")
    problem = columns_problem(columns, n_cols, values["col_end"] - values["col_start"])
    if problem:
        raise ShardError(path, f"member 'columns' {problem}")
    row_counts.flags.writeable = False
    columns.flags.writeable = False
    return ShardHeader(
        path=path, dtypes=dict(meta["dtypes"]), lineage_signature=meta["lineage_signature"],
        checksum=meta["checksum"], row_counts=row_counts, columns=columns, **values,
    )  # fmt: skip
