"""Chunk shards: the one place they are written and read.

A shard holds the non-zeros of one chunk: a set of global columns of the calibration matrix
(the slice [col_start, col_end) of its chunk plan's column order; see `chunk_plan`), as an
*uncompressed* `.npz` (compressed shards cost 3x in assembly and 1-2 s each to write) with these
members, in this order (the small ones before the big ones):

- `header`     uint8, UTF-8 JSON: format version, chunk id, its plan slice, matrix shape, nnz,
               dtypes, lineage signature, checksum. Small and first, so planning reads it fast.
- `row_counts` int64[n_rows]: non-zeros per row. Pass 1 of the streaming assembly reads only
               this, so the final CSR can be preallocated exactly once.
- `col_start`, `col_end`  int64[1]: the plan slice, as upstream's shards carry it (its callers
               `np.load` a shard and read them); the header holds the same numbers.
- `columns`    the chunk's global column indices, strictly increasing (col_end - col_start of
               them, in the `cols` dtype): what the shard covers, so `verify` and the assembly
               can prove every column is covered exactly once without trusting the plan.
- `rows`       int32: row index (rows are targets: thousands, never near 2**31).
- `cols`       global column index: int32 while the matrix has < 2**31 columns, else int64.
               int32 halves the index bytes and is what scipy keeps; int64 indices that fit
               int32 are copied down by scipy, raising the assembly peak to 1.68x.
- `vals`       float64. The consumer multiplies the matrix by float64 weights; float32 data
               would be converted to float64 on every product (1.6-1.85x slower), and does not
               make assembly faster.

Entries are sorted by (row, col) with no duplicates, which makes the assembly scatter fast.
The checksum is xxh3_64 over the bytes of rows, cols, vals, row_counts, columns in that order (6 GB/s,
against 1 GB/s for sha256). Files are written atomically; every defect on read raises
`ShardError(path, defect)` and nothing else escapes.
"""

from __future__ import annotations

import json
import os
import struct
import tokenize
import zipfile
import zlib

import numpy as np
import xxhash

from policyengine_us_data.errors import ShardError
from policyengine_us_data.shards.column_sets import (
    columns_problem,
    outside_columns,
    strictly_sorted,
)
from policyengine_us_data.shards.npy_members import (
    LOCAL_HEADER,
    check_npy,
    read_npy_header,
    small_member,
)
from policyengine_us_data.shards.shard_format import (  # noqa: F401 (the format's names, re-exported for readers)
    CHECKSUM_ALGORITHM,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_FILE,
    MEMBERS,
    Shard,
    ShardHeader,
    col_dtype,
    header_from_meta,
    remove_shards,
    shard_dtypes,
    shard_path,
)
from policyengine_us_data.utils.atomic import atomic_path
from policyengine_us_data.utils.index_dtype import INT32_LIMIT

_READ_ERRORS = (
    OSError, EOFError, ValueError, KeyError, IndexError, TypeError, OverflowError,
    RuntimeError, NotImplementedError, RecursionError, MemoryError, struct.error, zlib.error,
    zipfile.BadZipFile, zipfile.LargeZipFile, UnicodeError, json.JSONDecodeError,
    SyntaxError, tokenize.TokenError,  # numpy parses a garbled .npy header with ast/tokenize
)  # fmt: skip


def _checksum(*arrays: np.ndarray) -> str:
    hasher = xxhash.xxh3_64()
    for array in arrays:
        hasher.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    return hasher.hexdigest()


def _prepare(path, rows, cols, vals, columns, col_start, col_end, n_rows, n_cols):
    """Cast to the shard dtypes, check ranges and columns, sort by (row, col); ValueError on bad input."""
    if not (0 <= n_rows < INT32_LIMIT) or not (0 <= col_start <= col_end <= n_cols):
        raise ValueError(f"{path}: bad shape/range n_rows={n_rows} n_cols={n_cols} [{col_start}, {col_end})")
    columns = np.arange(col_start, col_end) if columns is None else np.asarray(columns).ravel()
    problem = columns_problem(columns, n_cols, col_end - col_start)
    if problem:
        raise ValueError(f"{path}: the chunk's columns are bad: {problem}")
    rows, cols, vals = (np.asarray(a).ravel() for a in (rows, cols, vals))
    if not rows.size == cols.size == vals.size:
        raise ValueError(f"{path}: rows, cols, vals lengths differ ({rows.size}, {cols.size}, {vals.size})")
    if rows.size and (rows.min() < 0 or rows.max() >= n_rows):  # checked before the casts, which could wrap
        raise ValueError(f"{path}: row index outside [0, {n_rows})")
    if outside_columns(cols, columns):
        raise ValueError(f"{path}: column index outside the chunk's columns")
    columns = columns.astype(col_dtype(n_cols), copy=False)
    rows = rows.astype(np.int32, copy=False)
    cols = cols.astype(col_dtype(n_cols), copy=False)
    vals = vals.astype(np.float64, copy=False)
    if not strictly_sorted(rows, cols):
        order = np.lexsort((cols, rows))
        rows, cols, vals = rows[order], cols[order], vals[order]
        if not strictly_sorted(rows, cols):
            raise ValueError(f"{path}: duplicate (row, col) entries; sum them before writing")
    return rows, cols, vals, columns


def write_shard(
    path: str | os.PathLike,
    rows: np.ndarray,
    cols: np.ndarray,
    vals: np.ndarray,
    *,
    chunk_id: int,
    col_start: int,
    col_end: int,
    n_rows: int,
    n_cols: int,
    lineage_signature: str,
    columns: np.ndarray | None = None,
) -> ShardHeader:
    """Write one shard atomically (sorting entries by (row, col) if needed) and return its header.

    `columns` are the chunk's global columns (strictly increasing, col_end - col_start of them);
    None means the range [col_start, col_end) itself. Bad input (indices out of range or outside
    the columns, duplicate cells, length mismatch) raises ValueError: it is a bug in the caller,
    and nothing is written.
    """
    rows, cols, vals, columns = _prepare(
        path, rows, cols, vals, columns, int(col_start), int(col_end), int(n_rows), int(n_cols)
    )
    row_counts = np.bincount(rows, minlength=n_rows).astype(np.int64, copy=False)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "chunk_id": int(chunk_id),
        "col_start": int(col_start),
        "col_end": int(col_end),
        "n_rows": int(n_rows),
        "n_cols": int(n_cols),
        "nnz": int(rows.size),
        "dtypes": shard_dtypes(int(n_cols)),
        "lineage_signature": str(lineage_signature),
        "checksum_algorithm": CHECKSUM_ALGORITHM,
        "checksum": _checksum(rows, cols, vals, row_counts, columns),
    }
    header = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:  # a file object: np.savez would append ".npz" to a name
            np.savez(handle, header=header, row_counts=row_counts, col_start=np.array([col_start], np.int64),
                     col_end=np.array([col_end], np.int64), columns=columns, rows=rows, cols=cols, vals=vals)
    return header_from_meta(str(path), meta, row_counts, columns)


class _ShardFile:
    """An open shard: central directory, header, row counts, and offsets of the big members.

    Big members are read with `np.fromfile` at their offset (no zip-layer copy); their
    integrity rests on the xxh3 checksum, which the readers verify.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)
        self.handle = open(path, "rb")
        try:
            self.size = os.fstat(self.handle.fileno()).st_size
            self.archive = zipfile.ZipFile(self.handle)
            for name in MEMBERS:
                self._info(name)
            row_counts = small_member(self.archive, "row_counts", "int64")
            raw = small_member(self.archive, "header", "uint8").tobytes()
            meta = json.loads(raw.decode("utf-8"))
            n_cols = meta.get("n_cols") if isinstance(meta, dict) else None
            if type(n_cols) is not int or n_cols < 0:
                raise ShardError(self.path, "header field n_cols missing or not a non-negative integer")
            columns = small_member(self.archive, "columns", col_dtype(n_cols).name)
            self.header = header_from_meta(self.path, meta, row_counts, columns)
        except BaseException:
            self.handle.close()
            raise

    def _info(self, name: str) -> zipfile.ZipInfo:
        try:
            info = self.archive.getinfo(name + ".npy")
        except KeyError:
            raise ShardError(self.path, f"missing member {name!r}") from None
        if info.compress_type != zipfile.ZIP_STORED:
            raise ShardError(self.path, f"member {name!r} is compressed; shards are stored uncompressed")
        return info

    def locate(self, name: str) -> tuple[int, int]:
        """(file offset of the data, element count) of a big member, checked against the file size."""
        info = self._info(name)
        self.handle.seek(info.header_offset)
        local = LOCAL_HEADER.unpack(self.handle.read(LOCAL_HEADER.size))
        if local[0] != b"PK\x03\x04":
            raise ShardError(self.path, f"member {name!r}: bad local zip header")
        start = info.header_offset + LOCAL_HEADER.size + local[9] + local[10]
        if start + info.file_size > self.size:
            raise ShardError(self.path, f"member {name!r} runs past the end of the file (truncated)")
        self.handle.seek(start)
        shape, fortran, dtype = read_npy_header(self.handle)
        offset = self.handle.tell()
        expected = self.header.dtypes[name]
        count = check_npy(name, shape, fortran, dtype, expected, info.file_size - (offset - start))
        wanted = self.header.row_counts.size if name == "row_counts" else self.header.nnz
        if count != wanted:
            raise ShardError(self.path, f"member {name!r} has {count} entries, header says {wanted}")
        return offset, count

    def read(self, name: str) -> np.ndarray:
        offset, count = self.locate(name)
        self.handle.seek(offset)
        array = np.fromfile(self.handle, dtype=self.header.dtypes[name], count=count)
        if array.size != count:
            raise ShardError(self.path, f"member {name!r} is truncated")
        return array

    def close(self) -> None:
        self.handle.close()


def _guarded(path: str | os.PathLike, action: str, body):
    """Run `body()` and turn any read failure into a ShardError naming the file."""
    try:
        return body()
    except ShardError:
        raise
    except FileNotFoundError:
        raise ShardError(path, "file is missing") from None
    except _READ_ERRORS as exc:
        raise ShardError(path, f"{action} failed: {type(exc).__name__}: {exc}") from None


def _check_lineage(header: ShardHeader, lineage_signature: str | None) -> None:
    if lineage_signature is not None and header.lineage_signature != lineage_signature:
        raise ShardError(
            header.path,
            f"wrong lineage: built for {header.lineage_signature[:16]}..., this run is {lineage_signature[:16]}...",
        )


def _check_chunk(
    header: ShardHeader, expect_chunk: tuple[int, int, int] | None, expect_columns: np.ndarray | None
) -> None:
    if expect_chunk is not None:
        found = (header.chunk_id, header.col_start, header.col_end)
        if found != tuple(int(v) for v in expect_chunk):
            raise ShardError(header.path, f"wrong chunk: holds chunk {found[0]} [{found[1]}, {found[2]}), expected "
                             f"chunk {expect_chunk[0]} [{expect_chunk[1]}, {expect_chunk[2]})")  # fmt: skip
    if expect_columns is not None and not np.array_equal(header.columns, expect_columns):
        extra = np.setdiff1d(header.columns, expect_columns)
        missing = np.setdiff1d(expect_columns, header.columns)
        raise ShardError(header.path, f"wrong columns for chunk {header.chunk_id}: {extra.size} not in its plan "
                         f"{extra[:5].tolist()}, {missing.size} of its planned columns missing {missing[:5].tolist()}")


class ShardReader:
    """Read a shard member by member (rows, cols, vals, then `finish`), verifying as it goes.

    The streaming assembly holds one member at a time this way; the checksum is hashed
    incrementally in the written order and compared in `finish`. Use as a context manager.
    """

    def __init__(self, path: str | os.PathLike, *, lineage_signature: str | None = None) -> None:
        self.path = str(path)
        self._file = _guarded(path, "reading the shard header", lambda: _ShardFile(path))
        self.header = self._file.header
        self._hasher = xxhash.xxh3_64()
        self._step = 0
        try:
            _check_lineage(self.header, lineage_signature)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "ShardReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def _next(self, name: str, step: int) -> np.ndarray:
        if self._step != step:
            raise RuntimeError("read rows, cols, vals, then finish, in that order")
        array = _guarded(self.path, f"reading {name}", lambda: self._file.read(name))
        self._hasher.update(memoryview(array).cast("B"))
        self._step += 1
        return array

    def rows(self) -> np.ndarray:
        """Row indices, checked in range, non-decreasing and consistent with row_counts."""
        rows = self._next("rows", 0)
        h = self.header
        if rows.size and (rows[0] < 0 or rows[-1] >= h.n_rows or np.any(rows[1:] < rows[:-1])):
            raise ShardError(self.path, f"rows are unsorted or outside [0, {h.n_rows})")
        if rows.size and not np.array_equal(np.bincount(rows, minlength=h.n_rows), h.row_counts):
            raise ShardError(self.path, "rows disagree with row_counts")
        return rows

    def cols(self) -> np.ndarray:
        """Column indices, checked to be the chunk's columns and increasing within each row."""
        cols = self._next("cols", 1)
        h = self.header
        if outside_columns(cols, h.columns):
            raise ShardError(self.path, "column index outside the chunk's columns")
        if cols.size > 1:
            bad = cols[1:] <= cols[:-1]
            row_starts = np.cumsum(h.row_counts)[:-1]
            row_starts = row_starts[(row_starts > 0) & (row_starts < cols.size)]
            bad[row_starts - 1] = False
            if np.any(bad):
                raise ShardError(self.path, "entries are not sorted by (row, col) or repeat a cell")
        return cols

    def vals(self) -> np.ndarray:
        """Values (float64)."""
        return self._next("vals", 2)

    def finish(self) -> None:
        """Hash row_counts last and compare the checksum with the header's."""
        if self._step != 3:
            raise RuntimeError("finish after reading rows, cols and vals")
        self._hasher.update(memoryview(np.ascontiguousarray(self.header.row_counts)).cast("B"))
        self._hasher.update(memoryview(np.ascontiguousarray(self.header.columns)).cast("B"))
        if self._hasher.hexdigest() != self.header.checksum:
            raise ShardError(self.path, f"wrong checksum: content hashes to {self._hasher.hexdigest()}, "
                             f"header says {self.header.checksum}")  # fmt: skip
        self._step += 1


def read_shard_header(path: str | os.PathLike) -> ShardHeader:
    """Read only the header and row counts (well under a millisecond): for planning and pass 1."""

    def body() -> ShardHeader:
        shard = _ShardFile(path)
        shard.close()
        return shard.header

    return _guarded(path, "reading the shard header", body)


def read_shard(path: str | os.PathLike, *, lineage_signature: str | None = None) -> Shard:
    """Read and fully verify a shard: layout, ranges, sortedness, counts, checksum, lineage."""
    with ShardReader(path, lineage_signature=lineage_signature) as reader:
        rows, cols, vals = reader.rows(), reader.cols(), reader.vals()
        reader.finish()
        return Shard(header=reader.header, rows=rows, cols=cols, vals=vals)


def verify_shard(
    path: str | os.PathLike,
    *,
    lineage_signature: str | None,
    deep: bool = True,
    expect_chunk: tuple[int, int, int] | None = None,
    expect_columns: np.ndarray | None = None,
) -> ShardHeader:
    """Raise ShardError unless the shard is sound and belongs to this run; return its header.

    Shallow: header, member layout and sizes, lineage, chunk id and plan slice, column set
    (milliseconds, for resume planning). Deep: also reads everything and checks ranges, order
    and the checksum.
    """
    if deep:
        header = read_shard(path, lineage_signature=lineage_signature).header
    else:

        def body() -> ShardHeader:
            shard = _ShardFile(path)
            try:
                for name in ("rows", "cols", "vals"):
                    shard.locate(name)
            finally:
                shard.close()
            return shard.header

        header = _guarded(path, "checking the shard layout", body)
        _check_lineage(header, lineage_signature)
    _check_chunk(header, expect_chunk, expect_columns)
    return header

