"""ModalChunkDispatcher against fakes of the function handle, the call and the volume."""

from __future__ import annotations

import json
from pathlib import Path

import modal
import pytest
from dispatch_fakes import FakeFunction, FakeKernel, make_plans

from policyengine_us_data.dispatch import (
    ModalChunkDispatcher,
    contiguous_batches,
    new_run_id,
    read_plans,
    validate_run_id,
)
from policyengine_us_data.dispatch import modal_backend
from policyengine_us_data.errors import InputError
from tests.support.modal_stand_ins import RecordingVolume

RUN = "run-1"


def exists(plan, deep):  # a verifier that needs no real shard format
    return Path(plan.shard_path).is_file()


def dispatcher(tmp_path, function, volume=None, **kwargs):
    kwargs.setdefault("verify", exists)
    return ModalChunkDispatcher(run_id=RUN, volume_root=str(tmp_path / "staging"), function=function,
                                volume=volume, **kwargs)


def test_batches_are_contiguous_and_sized_from_workers():
    d = ModalChunkDispatcher(num_workers=50, run_id=RUN)
    batches = d.batches(list(range(207)))
    assert len(batches) == 42 and all(len(b) == 5 for b in batches[:-1]) and batches[-1] == [205, 206]
    assert [c for b in batches for c in b] == list(range(207))
    assert all(b == list(range(b[0], b[-1] + 1)) for b in batches)
    by_four = ModalChunkDispatcher(num_workers=50, chunks_per_worker=4, run_id=RUN)
    assert by_four.batches(range(207))[-1] == [204, 205, 206]
    assert len(ModalChunkDispatcher(num_workers=50, chunks_per_worker=4, run_id=RUN).batches(list(range(207)))) == 52
    assert ModalChunkDispatcher(num_workers=50, run_id=RUN).batches([9, 3, 4]) == [[3], [4], [9]]
    assert contiguous_batches([5, 1, 2, 3], 2) == [[1, 2], [3, 5]]
    with pytest.raises(InputError):
        contiguous_batches([1], 0)


def test_dispatch_spawns_one_call_per_batch_and_writes_shards_on_the_volume(tmp_path, state_dir):
    function = FakeFunction(tmp_path / "staging", FakeKernel(tmp_path / "a"))
    volume = RecordingVolume()
    plans = make_plans(tmp_path / "elsewhere", 10)
    seen = []
    d = dispatcher(tmp_path, function, volume, num_workers=4)
    report = d.dispatch(plans, str(state_dir), on_result=seen.append)
    assert [s["chunk_ids"] for s in function.spawns] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert all(s["run_id"] == RUN for s in function.spawns)
    assert [r.chunk_id for r in report.results] == list(range(10)) and len(seen) == 10
    chunk_dir = tmp_path / "staging" / RUN / "matrix_chunks"
    assert sorted(p.name for p in chunk_dir.glob("chunk_*.npz")) == [f"chunk_{i:06d}.npz" for i in range(10)]
    assert [p.shard_path for p in d.plans_on_volume] == [str(chunk_dir / f"chunk_{i:06d}.npz") for i in range(10)]
    assert sorted(read_plans(tmp_path / "staging", RUN)) == list(range(10))
    # lease (reload, commit, reload to confirm), commit after publishing state and plans, reload after every
    # call, commit the lease's removal
    assert volume.calls == ["reload", "commit", "reload", "commit", *["reload"] * 4, "commit"]
    assert not (tmp_path / "staging" / RUN / "lease.json").exists()
    staged = tmp_path / "staging" / RUN / "state"
    assert (staged / "build_state.json").read_text() == (state_dir / "build_state.json").read_text()
    assert (staged / "dataset.h5").read_bytes() == b"not really hdf5"
    assert json.loads((chunk_dir / "chunk_000003.npz").read_text())["state"] == str(staged)


def test_one_failing_batch_does_not_stop_the_others(tmp_path, state_dir):
    function = FakeFunction(tmp_path / "staging", FakeKernel(tmp_path / "a"), raise_on_get={4})
    report = dispatcher(tmp_path, function, num_workers=4, max_retries=0).dispatch(
        make_plans(tmp_path, 10), str(state_dir))
    assert [r.chunk_id for r in report.results] == [0, 1, 2, 6, 7, 8, 9]
    assert [(f.chunk_id, f.attempts) for f in report.failures] == [(3, 1), (4, 1), (5, 1)]
    assert all("container crashed" in f.error for f in report.failures)
    assert "RuntimeError" in report.failures[0].traceback_excerpt


def test_a_failed_batch_is_retried_in_smaller_batches(tmp_path, state_dir):
    function = FakeFunction(tmp_path / "staging", FakeKernel(tmp_path / "a"), raise_on_get={4})
    report = dispatcher(tmp_path, function, num_workers=4, max_retries=1).dispatch(
        make_plans(tmp_path, 10), str(state_dir))
    assert [r.chunk_id for r in report.results] == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert [(f.chunk_id, f.attempts) for f in report.failures] == [(4, 2)]
    assert [s["chunk_ids"] for s in function.spawns[4:]] == [[3], [4], [5]]


def test_spawn_failure_is_gathered_too(tmp_path, state_dir):
    function = FakeFunction(tmp_path / "staging", FakeKernel(tmp_path / "a"), spawn_error={0})
    report = dispatcher(tmp_path, function, num_workers=2, max_retries=0).dispatch(
        make_plans(tmp_path, 4), str(state_dir))
    assert [r.chunk_id for r in report.results] == [2, 3]
    assert [f.chunk_id for f in report.failures] == [0, 1]
    assert "spawn failed" in report.failures[0].error


def test_per_chunk_errors_are_retried_up_to_the_bound(tmp_path, state_dir):
    kernel = FakeKernel(tmp_path / "a", fail={1: 2, 2: -1})
    function = FakeFunction(tmp_path / "staging", kernel)
    report = dispatcher(tmp_path, function, num_workers=1, max_retries=2).dispatch(
        make_plans(tmp_path, 4), str(state_dir))
    assert [r.chunk_id for r in report.results] == [0, 1, 3]
    assert [(f.chunk_id, f.attempts) for f in report.failures] == [(2, 3)]
    assert kernel.attempts(1) == 3 and kernel.attempts(2) == 3 and kernel.attempts(0) == 1
    assert [s["chunk_ids"] for s in function.spawns] == [[0, 1, 2, 3], [1, 2], [1, 2]]


def test_success_without_a_shard_after_reload_is_a_failure(tmp_path, state_dir):
    function = FakeFunction(tmp_path / "staging", FakeKernel(tmp_path / "a"), drop={1})
    report = dispatcher(tmp_path, function, num_workers=2, max_retries=0).dispatch(
        make_plans(tmp_path, 2), str(state_dir))
    assert [r.chunk_id for r in report.results] == [0]
    assert "missing or damaged after a volume reload" in report.failures[0].error


def test_resume_with_the_same_run_id_skips_finished_chunks(tmp_path, state_dir):
    kernel = FakeKernel(tmp_path / "a", fail={2: -1})
    first = dispatcher(tmp_path, FakeFunction(tmp_path / "staging", kernel), num_workers=2, max_retries=0)
    report = first.dispatch(make_plans(tmp_path, 4), str(state_dir))
    assert [f.chunk_id for f in report.failures] == [2]
    kernel.fail = {}
    function = FakeFunction(tmp_path / "staging", kernel)
    again = dispatcher(tmp_path, function, num_workers=2).dispatch(make_plans(tmp_path, 4), str(state_dir))
    assert again.skipped == [0, 1, 3]
    assert [s["chunk_ids"] for s in function.spawns] == [[2]]
    assert [r.chunk_id for r in again.results] == [2] and not again.failures


def test_resume_off_recomputes_everything(tmp_path, state_dir):
    kernel = FakeKernel(tmp_path / "a")
    dispatcher(tmp_path, FakeFunction(tmp_path / "staging", kernel)).dispatch(make_plans(tmp_path, 3), str(state_dir))
    function = FakeFunction(tmp_path / "staging", kernel)
    report = dispatcher(tmp_path, function, resume=False).dispatch(make_plans(tmp_path, 3), str(state_dir))
    assert report.skipped == [] and len(report.results) == 3


def test_default_verifier_rejects_damaged_shards(tmp_path):
    pytest.importorskip("policyengine_us_data.shards.shards")
    from policyengine_us_data.shards.shards import write_shard

    import numpy as np

    plans = make_plans(tmp_path, 2, signature="lineage-a")
    for plan in plans:
        write_shard(plan.shard_path, np.array([0, 1]), np.array([plan.col_start, plan.col_start + 1]),
                    np.array([1.0, 2.0]), chunk_id=plan.chunk_id, col_start=plan.col_start, col_end=plan.col_end,
                    n_rows=3, n_cols=20, lineage_signature="lineage-a")
    assert modal_backend.shard_verifies(plans[0], deep=True)
    data = Path(plans[1].shard_path).read_bytes()
    Path(plans[1].shard_path).write_bytes(data[: len(data) // 2])
    assert not modal_backend.shard_verifies(plans[1], deep=False)
    other = make_plans(tmp_path, 1, signature="lineage-b")[0]
    assert not modal_backend.shard_verifies(other, deep=False)
    assert not modal_backend.shard_verifies(make_plans(tmp_path / "none", 1)[0], deep=True)


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "..", "a..b", ".hidden", "-x", "x" * 65, "a b", "a\\b", None, 5])
def test_bad_run_ids_are_refused(bad):
    with pytest.raises(InputError, match="invalid run id"):
        validate_run_id(bad)
    if bad:
        with pytest.raises(InputError):
            ModalChunkDispatcher(run_id=bad)


@pytest.mark.parametrize("good", ["run-1", "2024.06.01_full", "A", "x" * 64])
def test_good_run_ids(good):
    assert validate_run_id(good) == good
    assert ModalChunkDispatcher(run_id=good).run_id == good


def test_missing_run_id_gets_a_fresh_valid_one():
    assert validate_run_id(new_run_id())
    assert ModalChunkDispatcher().run_id != "" and ModalChunkDispatcher(run_id="").run_id


def test_bad_settings_are_refused():
    for kwargs in ({"num_workers": 0}, {"chunks_per_worker": 0}, {"max_retries": -1}):
        with pytest.raises(InputError):
            ModalChunkDispatcher(run_id=RUN, **kwargs)


class _Unreachable:
    def __init__(self, exc):
        self.exc = exc

    def hydrate(self):
        raise self.exc


@pytest.mark.parametrize(
    "exc, what",
    [
        (modal.exception.AuthError("Token missing"), "no usable Modal credentials"),
        (modal.exception.NotFoundError("App 'policyengine-us-data-pipeline' not found"), "is not deployed"),
        (modal.exception.ConnectionError("cannot connect"), "cannot reach"),
    ],
)
def test_missing_token_or_app_says_what_to_do(monkeypatch, tmp_path, state_dir, exc, what):
    looked_up = []

    def from_name(app_name, function_name, **kwargs):
        looked_up.append((app_name, function_name))
        return _Unreachable(exc)

    monkeypatch.setattr(modal.Function, "from_name", from_name)
    d = ModalChunkDispatcher(run_id=RUN, volume_root=str(tmp_path / "staging"))
    with pytest.raises(InputError) as info:
        d.dispatch(make_plans(tmp_path, 2), str(state_dir))
    message = str(info.value)
    assert what in message
    for hint in ("modal token new", "modal deploy policyengine_us_data/modal_app/app.py", "--backend local"):
        assert hint in message
    assert looked_up == [("policyengine-us-data-pipeline", "build_matrix_chunk_worker")]
    assert not (tmp_path / "staging").exists()  # nothing published before the function is known


def test_missing_state_dir_is_an_input_error(tmp_path):
    function = FakeFunction(tmp_path / "staging", FakeKernel(tmp_path / "a"))
    with pytest.raises(InputError, match="no build state"):
        dispatcher(tmp_path, function).dispatch(make_plans(tmp_path, 1), str(tmp_path / "nope"))


def test_ctrl_c_while_waiting_cancels_the_calls(tmp_path, state_dir):
    class Interrupting(FakeFunction):
        def spawn(self, **kwargs):
            call = super().spawn(**kwargs)
            if kwargs["chunk_ids"][0] == 2:
                def interrupted():
                    raise KeyboardInterrupt
                call._run = interrupted
            self.calls = getattr(self, "calls", []) + [call]
            return call

    function = Interrupting(tmp_path / "staging", FakeKernel(tmp_path / "a"))
    with pytest.raises(KeyboardInterrupt):
        dispatcher(tmp_path, function, num_workers=2).dispatch(make_plans(tmp_path, 4), str(state_dir))
    assert all(call.cancelled for call in function.calls)
