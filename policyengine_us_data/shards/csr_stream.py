"""Streaming assembly of the final CSR matrix from chunk shards.

Upstream loaded every shard into lists, concatenated and converted COO to CSR: 2-3.7x the
final matrix at peak. Here, two passes:

1. Header-only reads sum each shard's `row_counts`, which gives `indptr` and the exact nnz, so
   `data` and `indices` are allocated once, with the dtypes scipy keeps (float64 data; int32
   indices and indptr while nnz and the shape fit, else int64 for both: scipy requires one
   index dtype and would otherwise copy).
2. Each shard is read member by member (rows, cols, vals: one at a time) and scattered:
   every row's run of entries goes to that row's next free slot, with positions computed
   vectorised from a per-row cursor. Shards whose column sets are disjoint and ordered (the
   contiguous plan) fill every row in column order, so the result is canonical as it stands.
   Shards whose column sets interleave (the state-major plan) leave each row as a few sorted
   runs, one per shard; a stable sort of each row then merges them (timsort exploits the
   runs), giving the same arrays.

The peak is the final CSR plus about one shard member and one position array. The out-of-core
variant writes `data.npy`, `indices.npy` and `indptr.npy` through memory maps and releases
the touched pages after each member, so resident memory stays a small fraction of the CSR.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp

from policyengine_us_data.shards.shards import ShardHeader, ShardReader, read_shard_header
from policyengine_us_data.errors import ShardError
from policyengine_us_data.utils.atomic import atomic_path, atomic_write_json
from policyengine_us_data.utils.crash_points import crash_point
from policyengine_us_data.utils.index_dtype import index_dtype

PARTS = ("data.npy", "indices.npy", "indptr.npy")
META_NAME = "csr.json"
ShardLike = str | os.PathLike | ShardHeader
_RELEASE_EVERY = 1 << 24  # entries sorted between page releases in the out-of-core assembly


def check_column_cover(headers: Sequence[ShardHeader], n_cols: int, *, complete: bool = True) -> None:
    """Prove the shards' column sets are disjoint and, with `complete`, cover every column of [0, n_cols).

    Raises ShardError naming the first shard that repeats another's columns, or the columns no
    shard covers. Reads only the headers' `columns`; memory is 4 bytes per matrix column.
    """
    owner = np.full(n_cols, -1, dtype=np.int32)
    for i, h in enumerate(headers):
        taken = owner[h.columns]
        clash = taken >= 0
        if clash.any():
            other = headers[int(taken[clash][0])]
            raise ShardError(h.path, f"{int(clash.sum())} of its columns (first {int(h.columns[clash][0])}) are also "
                             f"in chunk {other.chunk_id} ({other.path}): a column must be covered exactly once")
        owner[h.columns] = i
    if complete:
        missing = np.flatnonzero(owner < 0)
        if missing.size:
            where = headers[-1].path if headers else "<no shards>"
            raise ShardError(where, f"no shard covers {missing.size} column(s), first {missing[:5].tolist()}")


def _first_column(h: ShardHeader) -> int:
    return int(h.columns[0]) if h.columns.size else h.col_start


def columns_ordered(headers: Sequence[ShardHeader]) -> bool:
    """True when each shard's columns all come before the next one's (contiguous ranges in order)."""
    last = -1
    for h in headers:
        if h.columns.size:
            if int(h.columns[0]) <= last:
                return False
            last = int(h.columns[-1])
    return True


def plan_assembly(shards: Sequence[ShardLike], n_rows: int, n_cols: int, *, complete: bool = True):
    """Pass 1: headers by first column and `indptr`, checking shapes and that columns are covered once.

    Raises ShardError for a shard of another shape, columns in two shards, or (with `complete`)
    columns no shard covers.
    """
    headers = [s if isinstance(s, ShardHeader) else read_shard_header(s) for s in shards]
    headers.sort(key=lambda h: (_first_column(h), h.chunk_id))
    counts = np.zeros(n_rows, dtype=np.int64)
    for h in headers:
        if (h.n_rows, h.n_cols) != (n_rows, n_cols):
            raise ShardError(h.path, f"shard is for a {h.n_rows} x {h.n_cols} matrix, assembling {n_rows} x {n_cols}")
        counts += h.row_counts
    check_column_cover(headers, n_cols, complete=complete)
    nnz = int(counts.sum())
    indptr = np.zeros(n_rows + 1, dtype=index_dtype(nnz, n_rows, n_cols))
    np.cumsum(counts, out=indptr[1:])
    return headers, indptr


def sort_rows(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, release: Callable[[str], None] = lambda name: None
) -> None:
    """Sort every row's entries by column in place (stable; each row is a few sorted runs)."""
    done = 0
    for row in np.flatnonzero(np.diff(indptr) > 1):
        start, end = int(indptr[row]), int(indptr[row + 1])
        segment = np.asarray(indices[start:end])
        order = np.argsort(segment, kind="stable")
        indices[start:end] = segment[order]
        data[start:end] = np.asarray(data[start:end])[order]
        done += end - start
        if done >= _RELEASE_EVERY:
            release("indices")
            release("data")
            done = 0


def _destinations(row_counts: np.ndarray, cursor: np.ndarray) -> np.ndarray:
    """Final CSR position of every entry of a (row, col)-sorted shard, from the row cursors.

    Built in one int64 array: ones, with a jump at each row's first entry, then cumsum in place.
    """
    nnz = int(row_counts.sum())
    step = np.ones(nnz, dtype=np.int64)
    if nnz == 0:
        return step
    rows = np.flatnonzero(row_counts)
    counts = row_counts[rows]
    first = cursor[rows]  # where each row's run starts in the output
    local = np.cumsum(counts) - counts  # where it starts in the shard
    previous_last = np.concatenate(([0], first[:-1] + counts[:-1] - 1))
    step[local] = first - previous_last
    np.cumsum(step, out=step)
    return step


def _scatter(
    header: ShardHeader,
    cursor: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    lineage_signature: str | None,
    release: Callable[[str], None] = lambda name: None,
) -> None:
    """Pass 2 for one shard: verify it while reading, scatter cols and vals, advance the cursors."""
    with ShardReader(header.path, lineage_signature=lineage_signature) as reader:
        found = reader.header
        if (found.checksum, found.col_start, found.col_end) != (header.checksum, header.col_start, header.col_end):
            raise ShardError(header.path, "shard changed between the two assembly passes")
        reader.rows()  # read, hashed and checked, then dropped: the scatter needs only row_counts
        dest = _destinations(found.row_counts, cursor)
        indices[dest] = reader.cols()
        release("indices")
        data[dest] = reader.vals()
        release("data")
        del dest
        reader.finish()
    cursor += found.row_counts


def assemble_csr(
    shards: Sequence[ShardLike],
    n_rows: int,
    n_cols: int,
    *,
    lineage_signature: str | None = None,
    complete: bool = True,
) -> sp.csr_matrix:
    """Assemble verified shards (paths or headers) into one canonical CSR matrix, in memory.

    Identical (data, indices, indptr) to `coo_matrix(...).tocsr()` with sorted indices, at a
    peak of about the final matrix plus one shard member.
    """
    headers, indptr = plan_assembly(shards, n_rows, n_cols, complete=complete)
    nnz = int(indptr[-1])
    indices = np.empty(nnz, dtype=indptr.dtype)
    data = np.empty(nnz, dtype=np.float64)
    cursor = indptr[:-1].astype(np.int64)
    for header in headers:
        _scatter(header, cursor, indices, data, lineage_signature)
        crash_point("assembly-midway")
    if not np.array_equal(cursor, indptr[1:]):
        raise AssertionError("assembly filled rows unevenly: a bug in csr_stream")
    if not columns_ordered(headers):
        sort_rows(indptr, indices, data)
    return _wrap(data, indices, indptr, n_rows, n_cols)


def _wrap(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, n_rows: int, n_cols: int) -> sp.csr_matrix:
    matrix = sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_cols), copy=False)
    if not matrix.has_sorted_indices:
        raise AssertionError("assembled indices are not sorted: shards out of column order")
    matrix.has_canonical_format = True  # disjoint column sets and strictly sorted shards: no duplicates
    return matrix


class _MappedNpy:
    """A `.npy` file created at full size (sparse) and memory-mapped for writing.

    We own the mmap, so `release` can drop its pages from our resident set with
    MADV_DONTNEED: on a shared file mapping the dirty pages stay in the page cache and are
    written back by the kernel, so nothing is lost and RSS stays small.
    """

    def __init__(self, path: Path, dtype: np.dtype, count: int) -> None:
        self.handle = open(path, "w+b")
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (count,)}
        np.lib.format.write_array_header_1_0(self.handle, header)
        offset = self.handle.tell()
        self.handle.truncate(offset + count * dtype.itemsize)
        self.handle.flush()
        self.map = mmap.mmap(self.handle.fileno(), offset + count * dtype.itemsize) if count else None
        self.array = np.frombuffer(self.map, dtype, count, offset) if count else np.empty(0, dtype)

    def release(self) -> None:
        if self.map is not None:
            self.map.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        del self.array
        if self.map is not None:
            self.map.flush()
            try:
                self.map.close()
            except BufferError:  # an exception in flight still holds a view of it: freed with that exception
                pass
        self.handle.close()


def assemble_csr_out_of_core(
    shards: Sequence[ShardLike],
    n_rows: int,
    n_cols: int,
    out_dir: str | os.PathLike,
    *,
    lineage_signature: str | None = None,
    complete: bool = True,
) -> dict[str, Path]:
    """Assemble shards into `data.npy`, `indices.npy`, `indptr.npy` (+ `csr.json`) in `out_dir`.

    Same arrays as `assemble_csr`, written through memory maps whose pages are released after
    each shard member, so resident memory is about one shard, not the matrix. Each file is
    written atomically; `csr.json` is written last and marks the set complete. Open the result
    with `load_csr_parts` (memory-mapped).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    headers, indptr = plan_assembly(shards, n_rows, n_cols, complete=complete)
    nnz = int(indptr[-1])
    cursor = indptr[:-1].astype(np.int64)
    paths = {name.split(".")[0]: out / name for name in PARTS}
    with contextlib.ExitStack() as stack:
        tmp_data = stack.enter_context(atomic_path(paths["data"]))
        tmp_indices = stack.enter_context(atomic_path(paths["indices"]))
        data = _MappedNpy(tmp_data, np.dtype(np.float64), nnz)
        indices = _MappedNpy(tmp_indices, indptr.dtype, nnz)
        try:
            maps = {"data": data, "indices": indices}
            for header in headers:
                _scatter(header, cursor, indices.array, data.array, lineage_signature, lambda n: maps[n].release())
                crash_point("assembly-midway")
            if not columns_ordered(headers):
                sort_rows(indptr, indices.array, data.array, lambda n: maps[n].release())
        finally:
            data.close()
            indices.close()
    if not np.array_equal(cursor, indptr[1:]):
        raise AssertionError("assembly filled rows unevenly: a bug in csr_stream")
    with atomic_path(paths["indptr"]) as tmp, open(tmp, "wb") as handle:
        np.save(handle, indptr)
    meta = {"format": "csr", "shape": [n_rows, n_cols], "nnz": nnz, "index_dtype": indptr.dtype.name}
    paths["meta"] = out / META_NAME
    atomic_write_json(paths["meta"], meta)
    return paths


def load_csr_parts(out_dir: str | os.PathLike, *, mmap_mode: str | None = "r") -> sp.csr_matrix:
    """Open an out-of-core result as a CSR matrix (memory-mapped, read-only, by default)."""
    out = Path(out_dir)
    try:
        meta = json.loads((out / META_NAME).read_text())
        parts = [np.load(out / name, mmap_mode=mmap_mode, allow_pickle=False) for name in PARTS]
    except (OSError, ValueError) as exc:
        raise ShardError(out, f"incomplete or unreadable CSR parts: {exc}") from None
    return _wrap(*parts, *meta["shape"])
