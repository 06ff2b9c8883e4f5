"""Shard format: round trips, and every defect surfaces as ShardError naming the file."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policyengine_us_data.shards.shards import (
    Shard,
    read_shard,
    read_shard_header,
    shard_path,
    verify_shard,
    write_shard,
)
from policyengine_us_data.errors import ShardError

N_ROWS, N_COLS = 40, 1000
SIG = "a" * 64


def random_entries(seed: int, col_start: int, col_end: int, n: int = 500, n_rows: int = N_ROWS):
    rng = np.random.default_rng(seed)
    keys = np.unique(rng.integers(0, n_rows, n) * (col_end - col_start) + rng.integers(0, col_end - col_start, n))
    rows, cols = keys // (col_end - col_start), keys % (col_end - col_start) + col_start
    return rows, cols, rng.normal(size=keys.size)


def make_shard(directory: Path, chunk_id: int = 1, col_start: int = 200, col_end: int = 400, seed: int = 0) -> Path:
    path = shard_path(directory, chunk_id)
    rows, cols, vals = random_entries(seed, col_start, col_end)
    order = np.random.default_rng(seed).permutation(rows.size)  # unsorted on purpose
    write_shard(path, rows[order], cols[order], vals[order], chunk_id=chunk_id, col_start=col_start,
                col_end=col_end, n_rows=N_ROWS, n_cols=N_COLS, lineage_signature=SIG)  # fmt: skip
    return path


def rewrite(path: Path, change) -> None:
    """Rewrite the zip with `change(members)` applied to its {name: bytes} members."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    change(members)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def member(members: dict, name: str) -> np.ndarray:
    return np.load(io.BytesIO(members[name + ".npy"]))


def expect_defect(path: Path, fragment: str, call=None) -> ShardError:
    with pytest.raises(ShardError) as info:
        (call or (lambda p: read_shard(p, lineage_signature=SIG)))(path)
    assert info.value.path == str(path)
    assert fragment in info.value.defect, info.value.defect
    return info.value


def test_round_trip_sorts_and_keeps_dtypes(tmp_path: Path) -> None:
    path = make_shard(tmp_path)
    rows, cols, vals = random_entries(0, 200, 400)  # np.unique order is (row, col) order
    shard = read_shard(path, lineage_signature=SIG)
    assert isinstance(shard, Shard)
    np.testing.assert_array_equal(shard.rows, rows)
    np.testing.assert_array_equal(shard.cols, cols)
    np.testing.assert_array_equal(shard.vals, vals)
    assert (shard.rows.dtype, shard.cols.dtype, shard.vals.dtype) == (np.int32, np.int32, np.float64)
    header = read_shard_header(path)
    assert (header.chunk_id, header.col_start, header.col_end, header.n_rows, header.n_cols) == (1, 200, 400, 40, 1000)
    assert header.nnz == rows.size and header.row_counts.sum() == rows.size
    np.testing.assert_array_equal(header.row_counts, np.bincount(rows, minlength=N_ROWS))
    assert header.lineage_signature == SIG and header.checksum == shard.header.checksum
    assert verify_shard(path, lineage_signature=SIG, deep=False, expect_chunk=(1, 200, 400)).nnz == rows.size
    assert verify_shard(path, lineage_signature=SIG, deep=True, expect_chunk=(1, 200, 400)).nnz == rows.size
    assert path.name == "chunk_000001.npz" and not list(tmp_path.glob(".tmp-*"))


def test_empty_shard_and_wide_matrix_use_int64_columns(tmp_path: Path) -> None:
    empty = tmp_path / "empty.npz"
    write_shard(empty, [], [], [], chunk_id=0, col_start=0, col_end=10, n_rows=5, n_cols=10, lineage_signature=SIG)
    assert read_shard(empty).rows.size == 0 and read_shard_header(empty).row_counts.tolist() == [0] * 5
    wide, n_cols = tmp_path / "wide.npz", 2**31 + 10
    write_shard(wide, [0, 1], [2**31 + 1, 2**31 + 9], [1.0, 2.0], chunk_id=0, col_start=2**31, col_end=n_cols,
                n_rows=2, n_cols=n_cols, lineage_signature=SIG)  # fmt: skip
    shard = read_shard(wide)
    assert shard.cols.dtype == np.int64 and shard.cols.tolist() == [2**31 + 1, 2**31 + 9]


@pytest.mark.parametrize(
    "rows, cols, fragment",
    [
        ([0, 0], [5, 5], "duplicate"),
        ([40], [5], "row index"),
        ([2**32 + 1], [5], "row index"),  # would wrap to 1 if cast before the check
        ([0], [99], "column index"),
        ([0], [2**32 + 5], "column index"),
        ([0, 1], [5], "lengths"),
    ],
)
def test_write_rejects_bad_entries(tmp_path: Path, rows, cols, fragment) -> None:
    path = tmp_path / "bad.npz"
    with pytest.raises(ValueError, match=fragment):
        write_shard(path, rows, cols, np.ones(len(rows)), chunk_id=0, col_start=0, col_end=10, n_rows=N_ROWS,
                    n_cols=N_COLS, lineage_signature=SIG)  # fmt: skip
    assert not path.exists() and not list(tmp_path.iterdir())


def test_missing_not_zip_and_truncated(tmp_path: Path) -> None:
    expect_defect(tmp_path / "nope.npz", "missing", read_shard_header)
    garbage = tmp_path / "garbage.npz"
    garbage.write_text("not a zip file")
    expect_defect(garbage, "BadZipFile", read_shard_header)
    path = make_shard(tmp_path)
    data = path.read_bytes()
    for cut in (0, 10, len(data) // 2, len(data) - 10):
        path.write_bytes(data[:cut])
        for call in (read_shard_header, read_shard, lambda p: verify_shard(p, lineage_signature=None, deep=False)):
            expect_defect(path, "", call)


def test_bit_flip_in_values_fails_deep_check_only(tmp_path: Path) -> None:
    path = make_shard(tmp_path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("vals.npy")
    data[info.header_offset + info.compress_size] ^= 0x10  # inside vals' data (its last bytes end there)
    path.write_bytes(bytes(data))
    verify_shard(path, lineage_signature=SIG, deep=False)  # shallow trusts the content by design
    expect_defect(path, "checksum")
    expect_defect(path, "checksum", lambda p: verify_shard(p, lineage_signature=SIG, deep=True))


def _replace(name: str, make):
    return lambda members: members.__setitem__(name + ".npy", npy(make(member(members, name))))


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda m: m.pop("vals.npy"), "missing member 'vals'"),
        (lambda m: m.pop("header.npy"), "missing member 'header'"),
        (_replace("rows", lambda a: a.astype(np.int64)), "rows"),
        (_replace("vals", lambda a: a[:-1]), "vals"),
        (_replace("row_counts", lambda a: a[:-1]), "row_counts"),
        (_replace("rows", lambda a: a[::-1].copy()), "unsorted"),
        (_replace("cols", lambda a: a + 300), "outside the chunk"),
        (_replace("cols", lambda a: a[::-1].copy()), "sorted"),
        (_replace("vals", lambda a: a + 1), "checksum"),
        (_replace("header", lambda a: np.frombuffer(b"{not json", np.uint8)), "JSONDecodeError"),
        (_replace("header", lambda a: a.reshape(1, -1)), "header"),
    ],
)
def test_damaged_members(tmp_path: Path, change, fragment) -> None:
    path = make_shard(tmp_path)
    rewrite(path, change)
    expect_defect(path, fragment)


def test_compressed_member_is_refused(tmp_path: Path) -> None:
    path = make_shard(tmp_path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    expect_defect(path, "compressed", read_shard_header)


def test_header_edits_are_caught(tmp_path: Path) -> None:
    path = make_shard(tmp_path)

    def edit(members):
        meta = json.loads(member(members, "header").tobytes())
        meta["nnz"] += 1
        members["header.npy"] = npy(np.frombuffer(json.dumps(meta).encode(), np.uint8))

    rewrite(path, edit)
    expect_defect(path, "nnz", read_shard_header)


def test_wrong_lineage_range_and_swapped_shards(tmp_path: Path) -> None:
    one = make_shard(tmp_path, chunk_id=1, col_start=200, col_end=400, seed=1)
    two = make_shard(tmp_path, chunk_id=2, col_start=400, col_end=600, seed=2)
    for deep in (False, True):

        def verify(p, sig=SIG, chunk=None, deep=deep):
            return verify_shard(p, lineage_signature=sig, deep=deep, expect_chunk=chunk)

        expect_defect(one, "wrong lineage", lambda p: verify(p, sig="b" * 64))
        expect_defect(one, "wrong chunk", lambda p: verify(p, chunk=(1, 200, 450)))
    a, b = one.read_bytes(), two.read_bytes()
    one.write_bytes(b)
    two.write_bytes(a)
    for path, chunk in ((one, (1, 200, 400)), (two, (2, 400, 600))):
        for deep in (False, True):
            expect_defect(path, "wrong chunk", lambda p: verify_shard(p, lineage_signature=SIG, deep=deep,
                                                                      expect_chunk=chunk))  # fmt: skip


def _readers():
    return (
        read_shard,
        read_shard_header,
        lambda p: verify_shard(p, lineage_signature=SIG, deep=False, expect_chunk=(1, 200, 400)),
        lambda p: verify_shard(p, lineage_signature=SIG, deep=True),
    )


def _only_shard_errors(path: Path, original: Shard | None = None) -> None:
    for reader in _readers():
        try:
            result = reader(path)
        except ShardError as exc:
            assert exc.path == str(path)
            continue
        if original is not None and isinstance(result, Shard):
            # a read that succeeds must return exactly what was written: no silent corruption
            np.testing.assert_array_equal(result.rows, original.rows)
            np.testing.assert_array_equal(result.cols, original.cols)
            np.testing.assert_array_equal(result.vals, original.vals)


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes_raise_only_shard_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "random.npz"
    path.write_bytes(data)
    _only_shard_errors(path)


@FUZZ
@given(
    cut=st.floats(0, 1, exclude_max=True),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), max_size=3),
)
def test_truncated_or_flipped_shard_raise_only_shard_error(tmp_path: Path, cut: float, flips) -> None:
    path = make_shard(tmp_path)
    original = read_shard(path)
    data = bytearray(path.read_bytes())
    for where, mask in flips:
        data[int(where * len(data))] ^= mask
    if not flips:
        data = data[: int(cut * len(data))]
    path.write_bytes(bytes(data))
    _only_shard_errors(path, original)
