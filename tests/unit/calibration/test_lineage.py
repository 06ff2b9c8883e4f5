"""Lineage signature, diffs, source hashing and the chunk manifest."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policyengine_us_data.shards import lineage as lineage_module
from policyengine_us_data.shards.chunk_plan import ChunkResult
from policyengine_us_data.shards.lineage import (
    ChunkManifest,
    build_lineage,
    diff_lineage,
    lineage_signature,
    source_hash,
)
from policyengine_us_data.errors import LineageMismatch, ManifestError
from policyengine_us_data.utils.hashing import file_sha256


def make_lineage(**changes) -> dict:
    base = dict(
        dataset_sha256="1" * 64, targets_fingerprint="2" * 64, constraints_fingerprint="3" * 64,
        geography_sha256="4" * 64, year=2024, n_records=50, n_clones=2, chunk_size=25_000,
        chunk_plan="state", rerandomize_takeup=False, kernel_version="5" * 64,
    )  # fmt: skip
    base.update(changes)
    return build_lineage(**base)


def test_lineage_records_versions_without_importing_policyengine() -> None:
    import sys

    lineage = make_lineage()
    assert {"policyengine_us_version", "policyengine_core_version", "kernel_version"} <= set(lineage)
    assert lineage["n_columns"] == 100 and lineage["lineage_version"] == 1
    assert "policyengine_us" not in sys.modules


def test_signature_is_canonical_and_sensitive() -> None:
    sig = lineage_signature(make_lineage())
    assert len(sig) == 64 and sig == lineage_signature(make_lineage(year=np.int64(2024), n_clones=np.int32(2)))
    assert sig == lineage_signature(dict(reversed(list(make_lineage().items()))))
    for change in (dict(year=2025), dict(chunk_size=1000), dict(rerandomize_takeup=True), dict(dataset_sha256="9" * 64),
                   dict(kernel_version="6" * 64), dict(extra={"simulator": "fake"}),
                   dict(chunk_plan="contiguous")):  # fmt: skip
        assert lineage_signature(make_lineage(**change)) != sig, change
    assert diff_lineage(make_lineage(), make_lineage(chunk_plan="contiguous")) == ['chunk_plan: "state" -> "contiguous"']


def test_diff_texts() -> None:
    old = make_lineage(extra={"simulator": "policyengine", "seed": 1})
    new = make_lineage(chunk_size=1000, dataset_sha256="f" * 64, rerandomize_takeup=True, extra={"simulator": "fake"})
    new["policyengine_us_version"] = "9.9.9"
    old["policyengine_us_version"] = "2.68.0"
    assert diff_lineage(old, new) == [
        "chunk_size: 25000 -> 1000",
        "dataset_sha256 changed",
        'extra.seed: removed (was 1)',
        'extra.simulator: "policyengine" -> "fake"',
        'policyengine_us_version: "2.68.0" -> "9.9.9"',
        "rerandomize_takeup: False -> True",
    ]
    assert diff_lineage(old, old) == []
    assert diff_lineage({}, {"year": 2024}) == ["year: added (2024)"]


def test_file_sha256_streams(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    data = np.random.default_rng(0).bytes(3 * 2**20 + 7)
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    assert file_sha256(path, block=1000) == hashlib.sha256(data).hexdigest()


def test_source_hash(tmp_path: Path) -> None:
    pkg = tmp_path / "a" / "kernel"
    pkg.mkdir(parents=True)
    (pkg / "one.py").write_text("x = 1\n")
    (pkg / "two.py").write_text("y = 2\n")
    copy = tmp_path / "b" / "kernel"
    shutil.copytree(pkg, copy)
    assert source_hash(pkg) == source_hash(copy)  # no absolute paths in the hash
    assert source_hash(pkg / "one.py") != source_hash(pkg / "two.py")
    before = source_hash(pkg)
    (pkg / "two.py").write_text("y = 3\n")
    assert source_hash(pkg) != before
    by_module = source_hash(lineage_module)
    assert by_module == source_hash("policyengine_us_data.shards.lineage")
    with pytest.raises(FileNotFoundError):
        source_hash("no_such_module_anywhere_xyz")


def finished(chunk_id: int, start: int, end: int, nnz: int, checksum: str, seconds: float, worker: str = ""):
    """A ChunkResult with only what the manifest tests look at."""
    return ChunkResult(chunk_id, start, end, nnz, 0, 0, seconds, 0.0, checksum, worker)


def test_manifest_round_trip_and_records(tmp_path: Path) -> None:
    path = tmp_path / "chunk_manifest.json"
    lineage = make_lineage()
    manifest = ChunkManifest.create(path, lineage)
    assert manifest.signature == lineage_signature(lineage)
    manifest.record_result(finished(0, 0, 20, 100, "abc", 1.5, worker="w0"))
    manifest.record_result(finished(0, 0, 20, 101, "abd", 1.2, worker="w1"))
    result = ChunkResult(chunk_id=1, col_start=20, col_end=40, nnz=7, households=5, persons=9, seconds=2.0,
                         peak_rss_mb=10.0, checksum="ff", worker="w2")  # fmt: skip
    manifest.record_result(result)
    loaded = ChunkManifest.load(path)
    assert loaded.signature == manifest.signature and loaded.lineage == manifest.lineage
    assert loaded.chunks[0].attempts == 2 and loaded.chunks[0].nnz == 101 and loaded.chunks[0].worker == "w1"
    assert loaded.chunks[1].checksum == "ff" and loaded.chunks[1].attempts == 1
    loaded.drop_chunk(0)
    assert list(ChunkManifest.load(path).chunks) == [1]
    loaded.check_lineage(lineage)
    assert not list(tmp_path.glob(".tmp-*"))


def test_manifest_lineage_mismatch_names_fields(tmp_path: Path) -> None:
    manifest = ChunkManifest.create(tmp_path / "m.json", make_lineage())
    with pytest.raises(LineageMismatch) as info:
        manifest.check_lineage(make_lineage(chunk_size=1000, dataset_sha256="9" * 64))
    assert info.value.differing == ["chunk_size: 25000 -> 1000", "dataset_sha256 changed"]
    assert "chunk_size: 25000 -> 1000" in str(info.value)


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"", "JSONDecodeError"),
        (b"\xff\xfe garbage", "UnicodeDecodeError"),
        (b"[1, 2]", "not a chunk manifest"),
        (b"[" * 100_000, "RecursionError"),
    ],
)
def test_manifest_garbage(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "chunk_manifest.json"
    path.write_bytes(content)
    with pytest.raises(ManifestError) as info:
        ChunkManifest.load(path)
    assert info.value.path == str(path) and fragment in info.value.defect
    with pytest.raises(ManifestError, match="missing"):
        ChunkManifest.load(tmp_path / "absent.json")


def test_manifest_edited_lineage_or_records_refused(tmp_path: Path) -> None:
    path = tmp_path / "chunk_manifest.json"
    ChunkManifest.create(path, make_lineage()).record_result(finished(0, 0, 20, 100, "abc", 1.5))
    good = json.loads(path.read_text())
    for edit, fragment in (
        (lambda o: o["lineage"].__setitem__("year", 1999), "lineage_signature"),
        (lambda o: o["chunks"][0].__setitem__("nnz", "many"), "malformed"),
        (lambda o: o["chunks"][0].__setitem__("bogus", 1), "bogus"),
        (lambda o: o["chunks"].append(dict(o["chunks"][0])), "twice"),
    ):
        obj = json.loads(json.dumps(good))
        edit(obj)
        path.write_text(json.dumps(obj))
        with pytest.raises(ManifestError, match=fragment):
            ChunkManifest.load(path)


def test_manifest_updates_stay_fast_at_production_size(tmp_path: Path) -> None:
    manifest = ChunkManifest.create(tmp_path / "chunk_manifest.json", make_lineage())
    start = time.perf_counter()
    for chunk in range(207):
        manifest.record_result(finished(chunk, chunk * 25_000, (chunk + 1) * 25_000, 10**6, "0123456789abcdef", 60.0, "w"))
    elapsed = time.perf_counter() - start
    assert len(ChunkManifest.load(tmp_path / "chunk_manifest.json").chunks) == 207
    assert elapsed < 30, f"207 atomic rewrites took {elapsed:.1f} s"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.binary(max_size=2048))
def test_random_bytes_raise_only_manifest_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "chunk_manifest.json"
    path.write_bytes(data)
    with pytest.raises(ManifestError):
        ChunkManifest.load(path)


@FUZZ
@given(lineage=json_values, chunks=json_values, signature=st.text(max_size=64))
def test_random_manifest_shapes_raise_only_manifest_error(tmp_path: Path, lineage, chunks, signature) -> None:
    path = tmp_path / "chunk_manifest.json"
    obj = {"format": lineage_module.MANIFEST_FORMAT, "version": 1, "lineage": lineage, "chunks": chunks,
           "lineage_signature": signature}  # fmt: skip
    path.write_text(json.dumps(obj))
    try:
        ChunkManifest.load(path)
    except ManifestError:
        pass
