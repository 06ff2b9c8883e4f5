"""Streaming CSR assembly: identical to scipy's reference, in memory and out of core."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policyengine_us_data.shards.csr_stream import (
    _wrap,
    assemble_csr,
    assemble_csr_out_of_core,
    index_dtype,
    load_csr_parts,
)
from policyengine_us_data.shards.shards import read_shard_header, shard_path, write_shard
from policyengine_us_data.errors import ShardError

SIG = "s" * 64


def write_matrix(directory: Path, dense_mask: np.ndarray, bounds: list[int], seed: int = 0):
    """Shards for the non-zero pattern `dense_mask` split at column `bounds`; returns (paths, reference)."""
    rng = np.random.default_rng(seed)
    n_rows, n_cols = dense_mask.shape
    rows_all, cols_all = np.nonzero(dense_mask)
    vals_all = rng.normal(size=rows_all.size)
    vals_all[rng.random(rows_all.size) < 0.05] = 0.0  # explicit zeros survive, as in scipy's reference
    paths = []
    for chunk_id, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        keep = (cols_all >= start) & (cols_all < end)
        order = rng.permutation(int(keep.sum()))
        path = shard_path(directory, chunk_id)
        write_shard(path, rows_all[keep][order], cols_all[keep][order], vals_all[keep][order], chunk_id=chunk_id,
                    col_start=start, col_end=end, n_rows=n_rows, n_cols=n_cols, lineage_signature=SIG)  # fmt: skip
        paths.append(path)
    reference = sp.coo_matrix((vals_all, (rows_all, cols_all)), shape=(n_rows, n_cols)).tocsr()
    reference.sum_duplicates()
    reference.sort_indices()
    return paths, reference


def write_column_sets(directory: Path, dense_mask: np.ndarray, column_sets: list[np.ndarray], seed: int = 0):
    """Shards holding arbitrary (interleaved) column sets, as the state-major plan writes them."""
    rng = np.random.default_rng(seed)
    n_rows, n_cols = dense_mask.shape
    rows_all, cols_all = np.nonzero(dense_mask)
    vals_all = rng.normal(size=rows_all.size)
    paths = []
    for chunk_id, columns in enumerate(column_sets):
        columns = np.sort(np.asarray(columns))
        keep = np.isin(cols_all, columns)
        path = shard_path(directory, chunk_id)
        write_shard(path, rows_all[keep], cols_all[keep], vals_all[keep], chunk_id=chunk_id, col_start=0,
                    col_end=columns.size, n_rows=n_rows, n_cols=n_cols, lineage_signature=SIG, columns=columns)
        paths.append(path)
    reference = sp.coo_matrix((vals_all, (rows_all, cols_all)), shape=(n_rows, n_cols)).tocsr()
    reference.sort_indices()
    return paths, reference


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n_rows=st.integers(1, 12), n_cols=st.integers(1, 80), n_sets=st.integers(1, 7), seed=st.integers(0, 10**6))
def test_interleaved_column_sets_assemble_to_the_reference(tmp_path_factory, n_rows, n_cols, n_sets, seed) -> None:
    rng = np.random.default_rng(seed)
    directory = tmp_path_factory.mktemp("sets")
    owner = rng.integers(0, n_sets, size=n_cols)
    sets = [np.flatnonzero(owner == k) for k in range(n_sets)]
    paths, reference = write_column_sets(directory, rng.random((n_rows, n_cols)) < 0.4, sets, seed)
    assert_identical(assemble_csr(paths, n_rows, n_cols), reference)
    assemble_csr_out_of_core(paths, n_rows, n_cols, directory / "out")
    assert_identical(load_csr_parts(directory / "out"), reference)


def test_a_column_set_that_overlaps_or_misses_is_named(tmp_path: Path) -> None:
    mask = np.random.default_rng(3).random((6, 30)) < 0.5
    evens, odds = np.arange(0, 30, 2), np.arange(1, 30, 2)
    paths, _ = write_column_sets(tmp_path / "overlap", mask, [evens, np.r_[odds, 4]])
    with pytest.raises(ShardError, match="1 of its columns \\(first 4\\) are also in chunk 0") as info:
        assemble_csr(paths, 6, 30)
    assert info.value.path == str(paths[1])
    paths, _ = write_column_sets(tmp_path / "gap", mask, [evens, odds[:-1]])
    with pytest.raises(ShardError, match="no shard covers 1 column\\(s\\), first \\[29\\]"):
        assemble_csr(paths, 6, 30)


def assert_identical(matrix: sp.csr_matrix, reference: sp.csr_matrix) -> None:
    assert matrix.shape == reference.shape
    for name in ("data", "indices", "indptr"):
        got, want = np.asarray(getattr(matrix, name)), getattr(reference, name)
        assert got.dtype == want.dtype, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert matrix.has_sorted_indices and matrix.has_canonical_format


@st.composite
def matrices(draw):
    n_rows = draw(st.integers(1, 25))
    widths = draw(st.lists(st.integers(1, 30), min_size=1, max_size=6))
    n_cols = sum(widths)
    density = draw(st.sampled_from([0.0, 0.05, 0.3, 0.9]))
    seed = draw(st.integers(0, 2**16))
    mask = np.random.default_rng(seed).random((n_rows, n_cols)) < density
    empty_rows = draw(st.lists(st.integers(0, n_rows - 1), max_size=3))
    mask[empty_rows] = False
    empty_shard = draw(st.integers(0, len(widths) - 1))
    bounds = np.concatenate(([0], np.cumsum(widths))).tolist()
    mask[:, bounds[empty_shard] : bounds[empty_shard + 1]] &= draw(st.booleans())
    return mask, bounds, seed


FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(case=matrices())
def test_assembly_equals_scipy_reference(tmp_path_factory, case) -> None:
    mask, bounds, seed = case
    directory = tmp_path_factory.mktemp("shards")
    paths, reference = write_matrix(directory, mask, bounds, seed)
    assert_identical(assemble_csr(paths[::-1], *mask.shape, lineage_signature=SIG), reference)
    headers = [read_shard_header(p) for p in paths]
    assert_identical(assemble_csr(headers, *mask.shape), reference)


@settings(max_examples=15, deadline=None)
@given(case=matrices())
def test_out_of_core_equals_in_memory(tmp_path_factory, case) -> None:
    mask, bounds, seed = case
    directory = tmp_path_factory.mktemp("shards")
    paths, reference = write_matrix(directory, mask, bounds, seed)
    parts = assemble_csr_out_of_core(paths, *mask.shape, directory / "out")
    assert set(parts) == {"data", "indices", "indptr", "meta"} and all(p.exists() for p in parts.values())
    assert_identical(load_csr_parts(directory / "out"), assemble_csr(paths, *mask.shape))
    assert_identical(load_csr_parts(directory / "out"), reference)
    assert not list((directory / "out").glob(".tmp-*"))


def test_medium_random_matrix_and_dtypes(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    mask = rng.random((300, 2000)) < 0.02
    mask[:, :40] = True  # dense columns
    paths, reference = write_matrix(tmp_path, mask, [0, 7, 500, 500 + 333, 1500, 2000])
    matrix = assemble_csr(paths, 300, 2000)
    assert_identical(matrix, reference)
    assert (matrix.data.dtype, matrix.indices.dtype, matrix.indptr.dtype) == (np.float64, np.int32, np.int32)


def test_scipy_keeps_our_arrays_without_copying() -> None:
    data, indices, indptr = np.ones(3), np.array([0, 2, 1], np.int32), np.array([0, 2, 3], np.int32)
    matrix = _wrap(data, indices, indptr, 2, 3)
    for ours, theirs in ((data, matrix.data), (indices, matrix.indices), (indptr, matrix.indptr)):
        assert np.shares_memory(ours, theirs)
    assert index_dtype(2**31 - 1, 3842, 5_175_000) == np.int32
    assert index_dtype(2**31, 3842, 5_175_000) == np.int64  # then indptr AND indices are int64
    assert index_dtype(10, 3, 2**31) == np.int64


def _last_byte_of(path: Path, member: str) -> int:
    """The file offset of the last data byte of a stored zip member (so a flip lands in that member)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    raw = path.read_bytes()
    name_len = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    return info.header_offset + 30 + name_len + extra_len + info.compress_size - 1


def test_shape_overlap_gap_and_damage_raise_shard_error(tmp_path: Path) -> None:
    mask = np.random.default_rng(1).random((10, 60)) < 0.3
    paths, _ = write_matrix(tmp_path, mask, [0, 20, 40, 60])
    with pytest.raises(ShardError, match="10 x 60 matrix"):
        assemble_csr(paths, 11, 60)
    with pytest.raises(ShardError, match="no shard covers 20 column\\(s\\), first \\[20, 21"):
        assemble_csr([paths[0], paths[2]], 10, 60)
    assert assemble_csr([paths[0], paths[2]], 10, 60, complete=False).nnz == mask[:, :20].sum() + mask[:, 40:].sum()
    with pytest.raises(ShardError, match="no shard covers 20 column\\(s\\), first \\[40, 41"):
        assemble_csr(paths[:2], 10, 60)
    with pytest.raises(ShardError, match="20 of its columns \\(first 20\\) are also in chunk 1"):
        assemble_csr(paths + [paths[1]], 10, 60)
    with pytest.raises(ShardError, match="wrong lineage"):
        assemble_csr(paths, 10, 60, lineage_signature="other")
    data = bytearray(paths[1].read_bytes())
    data[_last_byte_of(paths[1], "vals.npy")] ^= 0xFF
    paths[1].write_bytes(bytes(data))
    with pytest.raises(ShardError) as info:
        assemble_csr(paths, 10, 60)
    assert info.value.path == str(paths[1])
    with pytest.raises(ShardError):
        assemble_csr_out_of_core(paths, 10, 60, tmp_path / "out")
    assert not (tmp_path / "out" / "data.npy").exists() and not list((tmp_path / "out").glob(".tmp-*"))


def test_shard_replaced_between_passes_is_caught(tmp_path: Path) -> None:
    mask = np.random.default_rng(2).random((10, 40)) < 0.3
    paths, _ = write_matrix(tmp_path, mask, [0, 20, 40])
    headers = [read_shard_header(p) for p in paths]
    write_matrix(tmp_path, ~mask, [0, 20, 40])
    with pytest.raises(ShardError, match="changed between"):
        assemble_csr(headers, 10, 40)


def test_load_parts_of_unfinished_directory(tmp_path: Path) -> None:
    with pytest.raises(ShardError, match="incomplete"):
        load_csr_parts(tmp_path)
