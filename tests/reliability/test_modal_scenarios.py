"""Production scenarios on Modal, end to end through the real coordinator, against the emulated Modal.

Each scenario runs the app's coordinator (`build_matrix`: inputs, lease, the runner on `/staging/{run_id}/run`,
its dispatch step fanning out to `build_matrix_chunk_worker`) in its own process group, with worker containers
as separate processes on their own copies of the volume (tests/support/emulated_modal.py). The matrix each
one commits to the volume must equal the local pool's, array for array; the kernel-call log shows what was
(re)computed. `make modal-scenarios` prints one line per scenario.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.conftest import REPO, TOY_SIM, main_in_process, read_matrix, subprocess_env, wait_for
from tests.support.emulated_modal import EmulatedModal, Fault, coordinator_spec

pytestmark = [pytest.mark.modal_scenarios, pytest.mark.timeout(300),
              pytest.mark.filterwarnings("ignore:The .* function is executing locally")]
RUN = "prod-1"
HOUSEHOLDS, CLONES, CHUNK = 60, 2, 25  # 120 columns: 5 chunks; 3 workers -> batches [0,1] [2,3] [4]
N_CHUNKS = 5
# The fault choreography names chunks and batches, so the scenarios fix the contiguous plan's layout;
# test_full_run_under_the_default_state_plan runs the default plan end to end.
DEFAULT_PLAN = ["--backend", "modal", "--num-matrix-workers", "3", "--n-clones", str(CLONES), "--chunk-size",
                str(CHUNK), "--simulator", TOY_SIM, "--chunk-seconds", "5", "--worker-startup-seconds", "20"]
RUNNER = [*DEFAULT_PLAN, "--chunk-plan", "contiguous"]
INPUTS = {"dataset": "artifacts:cps/toy_ecps.h5", "db": "artifacts:calibration/policy_data.db"}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, toy_db) -> Path:
    """Upstream's pipeline-artifacts volume: a household dataset and a target database."""
    from policyengine_us_data.datasets.h5io import write_dataset
    from policyengine_us_data.datasets.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("pipeline-artifacts")
    (root / "cps").mkdir()
    (root / "calibration").mkdir()
    write_dataset(root / "cps" / "toy_ecps.h5", generate_synthetic(HOUSEHOLDS, seed=7, period=2024))
    (root / "calibration" / "policy_data.db").write_bytes(toy_db.read_bytes())
    return root


@pytest.fixture(scope="module")
def local_matrix(tmp_path_factory, artifacts):
    """The reference: the same inputs built by the local pool (2 workers)."""
    run_dir = tmp_path_factory.mktemp("local") / "run"
    code = main_in_process(["--run-dir", str(run_dir), "--to", "assemble", "--dataset",
                            str(artifacts / "cps" / "toy_ecps.h5"), "--db",
                            str(artifacts / "calibration" / "policy_data.db"), "--n-clones", str(CLONES),
                            "--chunk-size", str(CHUNK), "--workers", "2", "--simulator", TOY_SIM])
    assert code == 0
    return read_matrix(run_dir)


def start(emu: EmulatedModal, artifacts: Path, *, run_id: str = RUN, faults=(), deployed_code=None,
          runner=RUNNER, **inputs) -> tuple[subprocess.Popen, Path]:
    """The coordinator in its own process group (so a test can kill it with everything it started)."""
    spec = coordinator_spec(emu, run_id, runner, faults, deployed_code, **(inputs or INPUTS))
    n = len(list(emu.root.glob("coordinator-*.json")))
    spec_path, out = emu.root / f"coordinator-{n}.json", emu.root / f"coordinator-{n}.out.json"
    spec_path.write_text(json.dumps(spec))
    env = subprocess_env(PE_ARTIFACTS_ROOT=str(artifacts))
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.emulated_modal", "coordinator", str(spec_path),
                             str(out)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, out


def finish(proc: subprocess.Popen, out: Path, timeout: float = 120) -> dict:
    stdout, stderr = proc.communicate(timeout=timeout)
    assert proc.returncode == 0 and out.exists(), f"coordinator process died ({proc.returncode}):\n{stderr[-3000:]}"
    return json.loads(out.read_text())


def coordinate(emu: EmulatedModal, artifacts: Path, **kwargs) -> dict:
    return finish(*start(emu, artifacts, **kwargs))


def committed_matrix(emu: EmulatedModal, run_id: str = RUN):
    return read_matrix(emu.store / run_id / "run")


def committed_shards(emu: EmulatedModal, run_id: str = RUN) -> set[int]:
    return {int(p.stem.split("_")[1]) for p in (emu.store / run_id / "matrix_chunks").glob("chunk_*.npz")}


def test_full_run(tmp_path, artifacts, local_matrix):
    emu = EmulatedModal(tmp_path / "modal")
    result = coordinate(emu, artifacts)
    assert result["status"] == 0, result["error"]
    assert committed_matrix(emu) == local_matrix
    assert emu.kernel_calls() == {c: 1 for c in range(N_CHUNKS)}
    assert "# " in result["report"] and not (emu.store / RUN / "lease.json").exists()


def test_full_run_under_the_default_state_plan(tmp_path, artifacts, local_matrix):
    emu = EmulatedModal(tmp_path / "modal")
    result = coordinate(emu, artifacts, runner=DEFAULT_PLAN)
    assert result["status"] == 0, result["error"]
    assert committed_matrix(emu) == local_matrix
    n_chunks = len(committed_shards(emu))
    assert n_chunks >= N_CHUNKS and emu.kernel_calls() == {c: 1 for c in range(n_chunks)}


def test_worker_oom_killed_mid_batch_is_retried_and_keeps_its_committed_chunk(tmp_path, artifacts, local_matrix):
    emu = EmulatedModal(tmp_path / "modal")
    result = coordinate(emu, artifacts, faults=[Fault(chunk=1, kind="oom")])
    assert result["status"] == 0, result["error"]
    assert committed_matrix(emu) == local_matrix
    # chunk 0 was committed before the kill: Modal's retry skips it; chunk 1 runs again
    assert emu.kernel_calls() == {0: 1, 1: 2, 2: 1, 3: 1, 4: 1}


def test_preempted_worker_restarts_without_using_a_retry(tmp_path, artifacts, local_matrix):
    emu = EmulatedModal(tmp_path / "modal", retries=0)  # a crash would fail the call; a preemption restarts it
    result = coordinate(emu, artifacts, faults=[Fault(chunk=3, kind="preempt")])
    assert result["status"] == 0, result["error"]
    assert committed_matrix(emu) == local_matrix
    assert emu.kernel_calls() == {0: 1, 1: 1, 2: 1, 3: 2, 4: 1}


def test_hung_worker_times_out_and_its_chunks_are_resubmitted_alone(tmp_path, artifacts, local_matrix):
    emu = EmulatedModal(tmp_path / "modal")
    runner = [*RUNNER[:-4], "--chunk-seconds", "0.5", "--worker-startup-seconds", "3"]
    result = coordinate(emu, artifacts, faults=[Fault(chunk=2, kind="hang")], runner=runner)
    assert result["status"] == 0, result["error"]
    assert committed_matrix(emu) == local_matrix
    assert emu.kernel_calls()[2] == 2 and emu.kernel_calls()[3] == 1  # [2, 3] cancelled, resubmitted as [2], [3]


def test_coordinator_killed_and_rerun_with_the_same_id_recomputes_no_finished_chunk(tmp_path, artifacts,
                                                                                   local_matrix):
    emu = EmulatedModal(tmp_path / "modal")
    proc, _ = start(emu, artifacts, faults=[Fault(chunk=4, kind="slow", seconds=60)])
    wait_for(lambda: {0, 1, 2, 3} <= committed_shards(emu), 90, "four committed shards")
    os.killpg(proc.pid, signal.SIGKILL)  # the coordinator, its runner and its in-flight worker containers
    proc.wait()
    finished = committed_shards(emu)
    before = emu.kernel_calls()
    assert 4 not in finished and (emu.store / RUN / "lease.json").exists()  # a dead holder's lease is left
    result = coordinate(emu, artifacts)
    assert result["status"] == 0, result["error"]
    rerun = {c: n - before.get(c, 0) for c, n in emu.kernel_calls().items() if n > before.get(c, 0)}
    assert set(rerun) == set(range(N_CHUNKS)) - finished, (rerun, finished)
    assert committed_matrix(emu) == local_matrix


def test_a_second_run_on_the_same_id_is_refused_and_the_first_finishes(tmp_path, artifacts, local_matrix):
    emu = EmulatedModal(tmp_path / "modal")
    first, first_out = start(emu, artifacts, faults=[Fault(chunk=4, kind="slow", seconds=6)])
    wait_for(lambda: (emu.store / RUN / "lease.json").exists(), 60, "the first run's lease")
    holder = json.loads((emu.store / RUN / "lease.json").read_text())
    second = coordinate(emu, artifacts)
    assert second["status"] == 3
    assert f"pid {holder['pid']}" in second["error"] and "another coordinator" in second["error"]
    result = finish(first, first_out)
    assert result["status"] == 0, result["error"]
    assert committed_matrix(emu) == local_matrix
    assert emu.kernel_calls() == {c: 1 for c in range(N_CHUNKS)}


def test_a_worker_of_a_stale_deploy_is_refused(tmp_path, artifacts):
    emu = EmulatedModal(tmp_path / "modal")
    result = coordinate(emu, artifacts, deployed_code="0" * 64)
    assert result["status"] == 1
    assert "stale" in result["error"] and "modal deploy" in result["error"]
    assert "0, 1, 2, 3, 4" in result["error"]  # the failure names the chunks
    assert emu.kernel_calls() == {} and not committed_shards(emu)


@pytest.mark.parametrize("inputs, message", [
    ({"dataset": "artifacts:cps/missing.h5", "db": INPUTS["db"]}, "--dataset 'artifacts:cps/missing.h5': no such file"),
    ({"dataset": INPUTS["dataset"], "db": "artifacts:../etc/passwd"}, "without '..'"),
    ({"db": INPUTS["db"]}, "no --dataset"),
    ({"dataset": "/home/me/ecps.h5"}, "give a local file"),
    ({"dataset": INPUTS["dataset"], "synthetic": True}, "exclude each other"),
    ({"dataset": INPUTS["dataset"], "resume": False, "run_exists": True}, "pick another --run-id"),
], ids=["missing-dataset", "db-outside-volume", "no-dataset-no-synthetic", "unstaged-local-path",
        "dataset-and-synthetic", "no-resume-on-an-existing-run"])
def test_bad_inputs_change_nothing_on_the_volume(tmp_path, artifacts, inputs, message, monkeypatch):
    """The coordinator refuses before its lease and its runner (so it runs in-process here: no process to spare)."""
    from policyengine_us_data.modal_app import app as app_module

    emu = EmulatedModal(tmp_path / "modal")
    inputs = dict(inputs)
    if inputs.pop("run_exists", False):
        (emu.store / RUN / "matrix_chunks").mkdir(parents=True)
        (emu.store / RUN / "matrix_chunks" / "chunk_000000.npz").write_bytes(b"a shard of the earlier run")
    before = sorted(str(p) for p in emu.store.rglob("*"))
    volume = emu.container("coordinator")
    monkeypatch.setattr(app_module, "staging_volume", volume)
    monkeypatch.setattr(app_module, "in_modal_container", lambda: True)
    monkeypatch.setattr(app_module, "run_runner", lambda *a: pytest.fail("the runner must not start"))
    for name, value in (("PE_STAGING_ROOT", volume.view), ("PE_ARTIFACTS_ROOT", artifacts),
                        ("PE_RUN_SCRATCH", tmp_path / "scratch")):
        monkeypatch.setenv(name, str(value))
    result = app_module.build_matrix.local(RUN, RUNNER, **inputs)
    assert result["status"] == 2 and message in result["error"], result["error"]
    assert sorted(str(p) for p in emu.store.rglob("*")) == before and not (tmp_path / "scratch").exists()
    assert sorted(p.relative_to(volume.view) for p in volume.view.rglob("*")) == sorted(
        p.relative_to(emu.store) for p in emu.store.rglob("*"))
