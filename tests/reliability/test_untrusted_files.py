"""Untrusted files: nothing read back from a run directory or a shared volume is unpickled, and every reader
given random bytes, a truncation or a few flipped bytes of a valid file raises only the project's own error
types (ShardError, ManifestError, DatasetError/InputError, CheckpointError) or reads the file, never crashes
another way and never hangs. The journal is the documented exception: an unreadable journal is read as empty
with a warning (checkpoints, not the journal, decide what is up to date), so its reader must never raise.
"""

from __future__ import annotations

import ast
import io
import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.conftest import REPO, _stub_figure, main_in_process, toy_args

SOURCES = ("runner", "commands", "policyengine_us_data")
EXAMPLES = int(os.environ.get("RELIABILITY_FUZZ_EXAMPLES", "150"))  # raise it for a deeper search
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


# ----------------------------------------------------------------------------- no unpickling
UNPICKLERS = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("cloudpickle", "load"),
              ("cloudpickle", "loads"), ("dill", "load"), ("dill", "loads"), ("joblib", "load"),
              ("pd", "read_pickle"), ("pandas", "read_pickle"), ("marshal", "load"), ("marshal", "loads"),
              ("shelve", "open")}


def unpickling_calls(source: str) -> list[str]:
    """Calls in ``source`` that could unpickle what they read: pickle-family loads, anything passed
    ``allow_pickle=True``, and ``np.load``/``numpy.load`` without an explicit ``allow_pickle=False``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module in {m for m, _ in UNPICKLERS}:
            found += [f"line {node.lineno}: from {node.module} import {a.name}" for a in node.names
                      if (node.module, a.name) in UNPICKLERS]
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = (func.value.id, func.attr) if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) \
            else None
        keywords = {k.arg: k.value for k in node.keywords}
        allow = keywords.get("allow_pickle")
        if name in UNPICKLERS:
            found.append(f"line {node.lineno}: {name[0]}.{name[1]}(...)")
        elif isinstance(allow, ast.Constant) and allow.value is not False or (allow is not None and
                                                                               not isinstance(allow, ast.Constant)):
            found.append(f"line {node.lineno}: allow_pickle={ast.unparse(allow)}")
        elif name in {("np", "load"), ("numpy", "load")} and allow is None:
            found.append(f"line {node.lineno}: {name[0]}.load(...) without allow_pickle=False")
    return found


def test_the_checker_finds_each_kind_of_unpickling():
    snippet = ("import pickle\nfrom pickle import loads\nimport numpy as np\npickle.load(f)\nnp.load(p)\n"
               "np.load(p, allow_pickle=True)\nnp.load(p, allow_pickle=flag)\nnp.load(p, allow_pickle=False)\n"
               "pd.read_pickle(p)\npickle.dump(x, f)\n")
    assert [hit.split(":")[0] for hit in unpickling_calls(snippet)] == [
        "line 2", "line 4", "line 5", "line 6", "line 7", "line 9"]


def test_nothing_read_back_is_unpickled():
    """The package writes one pickle (upstream's calibration_package.pkl, an output) and reads none."""
    hits = []
    for package in SOURCES:
        for path in sorted((REPO / package).rglob("*.py")):
            hits += [f"{path.relative_to(REPO)} {hit}" for hit in unpickling_calls(path.read_text())]
    assert hits == [], "readers that could unpickle untrusted files:\n" + "\n".join(hits)


# ----------------------------------------------------------------------------- fuzzing the readers
@pytest.fixture(scope="module")
def reference(tmp_path_factory, toy_db) -> Path:
    """A finished toy build: valid examples of every file a reader takes back."""
    run_dir = tmp_path_factory.mktemp("untrusted") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("policyengine_us_data.outputs.report_figure.render_figure", _stub_figure)
        mp.setattr("runner.fsutil.FSYNC", False)
        assert main_in_process(toy_args(run_dir, toy_db)) == 0
    return run_dir


def damaged(valid: bytes) -> st.SearchStrategy[bytes]:
    """Random bytes, a truncation of ``valid``, or ``valid`` with a few bytes overwritten."""
    def patch(edits: list[tuple[int, int]]) -> bytes:
        out = bytearray(valid)
        for position, value in edits:
            out[position % len(out)] = value
        return bytes(out)

    return st.one_of(
        st.binary(max_size=2048),
        st.integers(0, max(len(valid) - 1, 0)).map(lambda n: valid[:n]),
        st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 255)), min_size=1, max_size=6).map(patch),
    )


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)


def garbled_json(valid: bytes) -> st.SearchStrategy[bytes]:
    """A valid JSON document with one top-level field replaced by any JSON value (type confusion)."""
    document = json.loads(valid)
    keys = sorted(document) if isinstance(document, dict) else []

    def replace(choice: tuple[str, object]) -> bytes:
        changed = dict(document)
        changed[choice[0]] = choice[1]
        return json.dumps(changed).encode()

    if not keys:
        return JSON.map(lambda v: json.dumps(v).encode())
    return st.one_of(JSON.map(lambda v: json.dumps(v).encode()), st.tuples(st.sampled_from(keys), JSON).map(replace))


def _errors():
    from policyengine_us_data.errors import InputError, ManifestError, ShardError
    from runner import CheckpointError

    return InputError, ManifestError, ShardError, CheckpointError


def _check(read: Callable[[], object], allowed: tuple[type[BaseException], ...]) -> object | None:
    try:
        return read()
    except allowed:
        return None


def _fuzz(reference: Path, rel: str, strategy_of, read, allowed, then=None):
    """Run ``read(path)`` on a copy of ``rel`` whose bytes hypothesis chooses; only ``allowed`` may escape."""
    valid = (reference / rel).read_bytes()
    work = reference.parent / f"fuzz-{rel.replace('/', '_')}"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(reference, work, symlinks=True, ignore=shutil.ignore_patterns("checkpoints") if
                    not rel.startswith(".runner/checkpoints") else None)
    target = work / rel

    @FUZZ
    @given(content=strategy_of(valid))
    def run(content: bytes) -> None:
        target.write_bytes(content)
        result = _check(lambda: read(target), allowed)
        if then is not None and result is not None:
            then(result, content == valid)

    run()
    shutil.rmtree(work, ignore_errors=True)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("reader", ["read_shard", "read_shard_header", "verify_shard_deep", "verify_shard_shallow"])
def test_the_shard_reader_raises_only_shard_errors(reader, reference):
    from policyengine_us_data.shards import shards
    from policyengine_us_data.errors import ShardError

    rel = "chunks/chunk_000001.npz"
    good = shards.read_shard(reference / rel)
    signature = good.header.lineage_signature
    read = {
        "read_shard": lambda p: shards.read_shard(p, lineage_signature=signature),
        "read_shard_header": shards.read_shard_header,
        "verify_shard_deep": lambda p: shards.verify_shard(p, lineage_signature=signature, deep=True,
                                                           expect_chunk=(1, 25, 50)),
        "verify_shard_shallow": lambda p: shards.verify_shard(p, lineage_signature=signature, deep=False,
                                                              expect_chunk=(1, 25, 50)),
    }[reader]

    def never_a_damaged_one_for_a_good_one(result, _unchanged) -> None:
        if reader == "read_shard":  # a full read that succeeds returns exactly the chunk that was written
            for name in ("rows", "cols", "vals"):
                assert np.array_equal(getattr(result, name), getattr(good, name))
            assert np.array_equal(result.header.row_counts, good.header.row_counts)

    _fuzz(reference, rel, damaged, read, (ShardError,), never_a_damaged_one_for_a_good_one)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("strategy", [damaged, garbled_json], ids=["bytes", "json"])
def test_the_chunk_manifest_reader_raises_only_manifest_errors(strategy, reference):
    from policyengine_us_data.shards.lineage import ChunkManifest
    from policyengine_us_data.errors import ManifestError

    def usable(manifest, _unchanged) -> None:
        assert all(isinstance(cid, int) for cid in manifest.chunks)

    _fuzz(reference, "chunks/chunk_manifest.json", strategy, ChunkManifest.load, (ManifestError,), usable)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("strategy", [damaged, garbled_json], ids=["bytes", "json"])
def test_the_journal_reader_never_raises_and_status_still_works(strategy, reference):
    """An unreadable journal is empty history plus a warning; --status and --dry-run still answer."""
    from commands import build_matrix_runner
    from runner.journal import Journal

    def read(path: Path):
        journal = Journal(path)
        assert isinstance(journal.records, list)
        if journal.warning:
            assert journal.records == [] and "unreadable" in journal.warning
        runner = build_matrix_runner(path.parent.parent)
        runner.out = io.StringIO()
        assert runner.run(["--status", "--dry-run"]).exit_code in (0, 2)
        return journal

    _fuzz(reference, ".runner/journal.json", strategy, read, ())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("strategy", [damaged, garbled_json], ids=["bytes", "json"])
def test_the_checkpoint_manifest_loader_raises_only_checkpoint_errors(strategy, reference):
    """A damaged checkpoint manifest is a CheckpointError (never restored from); planning reports the step as
    stale instead of crashing."""
    from commands import build_matrix_runner
    from runner import CheckpointError
    from runner.checkpoints import CheckpointStore

    def read(path: Path):
        run_dir = path.parents[3]
        store = CheckpointStore(run_dir)
        manifest = store.load("dispatch")
        problems = store.verify(manifest)
        assert isinstance(problems, list)
        return manifest

    def plans(manifest, _unchanged) -> None:
        runner = build_matrix_runner(manifest.path.parents[3])
        runner.out = io.StringIO()
        assert runner.run(["--status", "--dry-run"]).exit_code in (0, 2)

    _fuzz(reference, ".runner/checkpoints/dispatch/manifest.json", strategy, read, (CheckpointError,), plans)


@pytest.mark.timeout(60)
def test_the_h5_reader_raises_only_dataset_errors(reference):
    from policyengine_us_data.datasets.h5io import read_dataset
    from policyengine_us_data.errors import DatasetError

    _fuzz(reference, "state/dataset.h5", damaged, read_dataset, (DatasetError,))


@pytest.mark.timeout(60)
def test_the_geography_reader_raises_only_input_errors(reference):
    from policyengine_us_data.datasets.geography import CloneGeography
    from policyengine_us_data.errors import InputError

    _fuzz(reference, "state/geography.npz", damaged, CloneGeography.load, (InputError,))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("rel,strategy", [("state/constraint_cache.json", damaged),
                                          ("state/constraint_cache.json", garbled_json),
                                          ("state/constraint_cache.npz", damaged)],
                         ids=["json-bytes", "json-fields", "npz-bytes"])
def test_the_constraint_cache_reader_raises_only_input_errors(rel, strategy, reference):
    from policyengine_us_data.targets.constraints import ConstraintCache
    from policyengine_us_data.errors import InputError

    _fuzz(reference, rel, strategy, lambda p: ConstraintCache.load(p.parent), (InputError,))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("strategy", [damaged, garbled_json], ids=["bytes", "json"])
def test_the_target_table_reader_raises_only_input_errors(strategy, reference):
    from policyengine_us_data.targets.targets import TargetTable
    from policyengine_us_data.errors import InputError

    _fuzz(reference, "state/targets.json", strategy, TargetTable.load_json, (InputError,))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("strategy", [damaged, garbled_json], ids=["bytes", "json"])
def test_the_build_state_reader_raises_only_input_errors(strategy, reference):
    from policyengine_us_data.kernel.build_state import read_state_meta
    from policyengine_us_data.errors import InputError

    _fuzz(reference, "state/build_state.json", strategy, lambda p: read_state_meta(p.parent), (InputError,))
