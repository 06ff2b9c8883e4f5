"""The Modal path's fault handling with in-process fakes: the run-id lease, batch timeouts, salvage of
committed chunks, stale deploys, workers that skip verified shards, inputs uploaded once.

The same behaviours run end to end, in separate processes, in tests/reliability/test_modal_scenarios.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import modal
import pytest
from dispatch_fakes import FakeCall, FakeFunction, FakeKernel, make_plans

from policyengine_us_data.dispatch import ModalChunkDispatcher, run_worker_batch, write_plans
from policyengine_us_data.dispatch.lease import INHERITED_LEASE_ENV, RunLease, VolumeSync
from policyengine_us_data.errors import RunLeaseHeld
from policyengine_us_data.modal_app.coordinator import STAGED, stage_local_input
from policyengine_us_data.utils.code_identity import code_identity, tree_hash
from tests.support.modal_stand_ins import RecordingVolume

RUN = "run-f"


def exists(plan, deep):
    return Path(plan.shard_path).is_file()


def dispatcher(tmp_path, function, **kwargs):
    kwargs.setdefault("verify", exists)
    return ModalChunkDispatcher(run_id=RUN, volume_root=str(tmp_path / "staging"), function=function, **kwargs)


# --- the lease ---------------------------------------------------------------------------------------------


def lease_file(tmp_path: Path, pid: int, heartbeat: float, host: str | None = None) -> Path:
    host = host or socket.gethostname()
    path = tmp_path / "lease.json"
    path.write_text(json.dumps({"holder": f"{host}:{pid}", "host": host, "pid": pid, "container": "",
                                "heartbeat": heartbeat, "heartbeat_utc": "then"}))
    return path


@pytest.fixture
def live_pid():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_a_live_holder_keeps_the_lease_and_is_named(tmp_path, live_pid):
    lease_file(tmp_path, live_pid, time.time())
    volume = RecordingVolume()
    with pytest.raises(RunLeaseHeld) as info:
        RunLease(tmp_path, RUN, VolumeSync(volume)).acquire()
    assert f"pid {live_pid}" in str(info.value) and "another coordinator" in str(info.value)
    assert volume.calls == ["reload"]  # nothing written, nothing committed
    assert json.loads((tmp_path / "lease.json").read_text())["pid"] == live_pid


def test_a_stale_heartbeat_or_a_dead_local_holder_is_taken_over(tmp_path, live_pid):
    lease_file(tmp_path, live_pid, time.time() - 3600, host="another-host")  # no heartbeat for an hour
    lease = RunLease(tmp_path, RUN, VolumeSync(None), stale_after=60)
    lease.acquire()
    assert json.loads((tmp_path / "lease.json").read_text())["pid"] == os.getpid()
    lease.release()
    assert not (tmp_path / "lease.json").exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lease_file(tmp_path, dead.pid, time.time())  # fresh heartbeat, but its process on this host is gone
    lease = RunLease(tmp_path, RUN, VolumeSync(None))
    lease.acquire()
    lease.release()


def test_a_fresh_heartbeat_on_another_host_is_alive(tmp_path):
    lease_file(tmp_path, 1, time.time(), host="another-host")
    with pytest.raises(RunLeaseHeld, match="host another-host"):
        RunLease(tmp_path, RUN, VolumeSync(None)).acquire()


def test_the_heartbeat_keeps_the_lease_fresh_and_commits(tmp_path):
    volume = RecordingVolume()
    lease = RunLease(tmp_path, RUN, VolumeSync(volume), heartbeat=0.05)
    lease.acquire()
    first = json.loads((tmp_path / "lease.json").read_text())["heartbeat"]
    time.sleep(0.3)
    assert json.loads((tmp_path / "lease.json").read_text())["heartbeat"] > first
    lease.release()
    assert volume.calls.count("commit") >= 3 and not (tmp_path / "lease.json").exists()


def test_the_runner_of_a_coordinator_inherits_its_lease(tmp_path, monkeypatch, live_pid):
    path = lease_file(tmp_path, live_pid, time.time())
    holder = json.loads(path.read_text())["holder"]
    monkeypatch.setenv(INHERITED_LEASE_ENV, holder)
    lease = RunLease(tmp_path, RUN, VolumeSync(None))
    lease.acquire()
    lease.release()
    assert json.loads(path.read_text())["holder"] == holder  # left with its holder


def test_an_unreadable_lease_counts_as_free(tmp_path):
    (tmp_path / "lease.json").write_text("{not json")
    lease = RunLease(tmp_path, RUN, VolumeSync(None))
    lease.acquire()
    lease.release()


def test_dispatch_is_refused_while_another_coordinator_holds_the_run_id(tmp_path, state_dir, live_pid):
    (tmp_path / "staging" / RUN).mkdir(parents=True)
    lease_file(tmp_path / "staging" / RUN, live_pid, time.time())
    function = FakeFunction(tmp_path / "staging", FakeKernel(tmp_path / "a"))
    with pytest.raises(RunLeaseHeld):
        dispatcher(tmp_path, function).dispatch(make_plans(tmp_path, 2), str(state_dir))
    assert function.spawns == [] and not (tmp_path / "staging" / RUN / "state").exists()


# --- batch timeouts, salvage, stale deploys ----------------------------------------------------------------


class HangingFunction(FakeFunction):
    """Batches holding `hang` time out once (after writing the chunks before it), then behave."""

    def __init__(self, *args, hang: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.hang = hang
        self.timeouts: list[float | None] = []
        self.cancelled: list[list[int]] = []

    def spawn(self, **kwargs):
        call = super().spawn(**kwargs)
        ids = list(kwargs["chunk_ids"])
        function = self

        class Call(FakeCall):
            def get(self, timeout=None):
                function.timeouts.append(timeout)
                if function.hang in ids and len(function.cancelled) == 0:
                    run_worker_batch(kwargs["run_id"], ids[: ids.index(function.hang)], root=function.root,
                                     kernel=function.kernel)
                    raise modal.exception.TimeoutError("no output")
                return call.get()

            def cancel(self, terminate_containers=False):
                assert terminate_containers
                function.cancelled.append(ids)

        return Call(call._run)


def test_a_hung_batch_is_cancelled_its_committed_chunks_kept_and_the_rest_resubmitted(tmp_path, state_dir):
    kernel = FakeKernel(tmp_path / "a")
    function = HangingFunction(tmp_path / "staging", kernel, hang=3)  # batch [2, 3] writes chunk 2, then hangs
    d = dispatcher(tmp_path, function, num_workers=2, chunk_seconds=10, startup_seconds=30, timeout_factor=2)
    report = d.dispatch(make_plans(tmp_path, 4), str(state_dir))
    assert function.cancelled == [[2, 3]] and not report.failures
    assert [r.chunk_id for r in report.results] == [0, 1, 3] and report.skipped == [2]
    assert [s["chunk_ids"] for s in function.spawns] == [[0, 1], [2, 3], [3]]
    assert function.timeouts[0] == 30 + 2 * 10 * 2  # start-up + factor x chunk seconds x chunks in the batch
    assert kernel.attempts(2) == 1  # committed before the hang: kept, not recomputed


def test_batch_timeouts_follow_the_slowest_measured_chunk(tmp_path):
    d = dispatcher(tmp_path, None, chunk_seconds=10, startup_seconds=5, timeout_factor=3)
    assert d.batch_timeout(2) == 5 + 3 * 10 * 2
    d.slowest_chunk = 40.0
    assert d.batch_timeout(2) == 5 + 3 * 40 * 2
    with pytest.raises(Exception):
        dispatcher(tmp_path, None, chunk_seconds=0)


def test_a_batch_that_keeps_timing_out_fails_naming_its_chunks(tmp_path, state_dir):
    class Never(FakeFunction):
        def spawn(self, **kwargs):
            self.spawns.append(kwargs)

            def hang():
                raise modal.exception.TimeoutError("no output")

            return FakeCall(hang)

    report = dispatcher(tmp_path, Never(tmp_path / "staging", FakeKernel(tmp_path / "a")), num_workers=1,
                        max_retries=1, chunk_seconds=1, startup_seconds=0).dispatch(make_plans(tmp_path, 2),
                                                                                    str(state_dir))
    assert [(f.chunk_id, f.attempts) for f in report.failures] == [(0, 2), (1, 2)]
    assert "gave no result within" in report.failures[0].error and "cancelled" in report.failures[0].error


def test_a_stale_worker_fails_at_once_without_retries(tmp_path, state_dir):
    class Stale(FakeFunction):
        def spawn(self, **kwargs):
            self.spawns.append(kwargs)
            return FakeCall(lambda: [{"chunk_id": c, "ok": False, "fatal": True, "error": "StaleWorkerCode: stale"}
                                     for c in kwargs["chunk_ids"]])

    function = Stale(tmp_path / "staging", FakeKernel(tmp_path / "a"))
    report = dispatcher(tmp_path, function, num_workers=1, max_retries=3).dispatch(make_plans(tmp_path, 3),
                                                                                  str(state_dir))
    assert len(function.spawns) == 1 and [f.attempts for f in report.failures] == [1, 1, 1]
    assert function.spawns[0]["code_identity"] == code_identity()


# --- the worker and the code identity ----------------------------------------------------------------------


def test_a_restarted_worker_skips_shards_that_verify(tmp_path, kernel):
    plans = make_plans(tmp_path / "staging" / RUN / "matrix_chunks", 3)
    write_plans(plans, tmp_path / "staging", RUN)
    commits = []
    outcomes = run_worker_batch(RUN, [0, 1, 2], root=tmp_path / "staging", kernel=kernel,
                                reuse=lambda plan: plan.chunk_id == 1, after_chunk=lambda: commits.append(1))
    assert [o.get("reused", False) for o in outcomes] == [False, True, False]
    assert kernel.attempts(1) == 0 and len(commits) == 2  # one commit per computed chunk


def test_code_identity_is_the_same_computed_anywhere(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "m.py").write_text("x = 1\n")
    other = tmp_path / "elsewhere"
    (other / "a").mkdir(parents=True)
    (other / "a" / "m.py").write_text("x = 1\n")
    assert tree_hash(tmp_path / "a") == tree_hash(other / "a")
    (other / "a" / "m.py").write_text("x = 2\n")
    assert tree_hash(tmp_path / "a") != tree_hash(other / "a")
    out = subprocess.run([sys.executable, "-c", "from policyengine_us_data.utils.code_identity import code_identity;"
                          "print(code_identity())"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == code_identity()


# --- inputs uploaded once ----------------------------------------------------------------------------------


class FakeStagingVolume:
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.uploads = 0

    def listdir(self, path):
        entries = [type("Entry", (), {"path": p})() for p in self.files if p.startswith(path.rstrip("/") + "/")]
        if not entries:
            raise modal.exception.NotFoundError(path)
        return entries

    def batch_upload(self):
        volume = self

        class Batch:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def put_file(self, local, remote):
                volume.uploads += 1
                volume.files[remote] = Path(local).read_bytes()

        return Batch()


def test_a_local_input_is_uploaded_once_under_its_content_hash(tmp_path):
    volume = FakeStagingVolume()
    dataset = tmp_path / "ecps.h5"
    dataset.write_bytes(b"households")
    spec = stage_local_input(volume, RUN, dataset, "--dataset")
    assert spec.startswith(f"{STAGED}inputs/") and spec.endswith("-ecps.h5")
    assert stage_local_input(volume, RUN, dataset, "--dataset") == spec and volume.uploads == 1
    dataset.write_bytes(b"other households")
    assert stage_local_input(volume, RUN, dataset, "--dataset") != spec and volume.uploads == 2
    with pytest.raises(Exception, match="no such local file"):
        stage_local_input(volume, RUN, tmp_path / "missing.h5", "--dataset")
