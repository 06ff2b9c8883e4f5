"""The Modal app offline: imports without credentials, settings, the venv image env, the worker body."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import modal
import pytest

from policyengine_us_data import modal_app
from policyengine_us_data.dispatch import write_plans
from policyengine_us_data.shards.chunk_plan import ChunkPlan, ChunkResult
from policyengine_us_data.errors import InputError
from policyengine_us_data.modal_app import app as app_module
from policyengine_us_data.modal_app import images
from tests.support.modal_stand_ins import RecordingVolume

pytestmark = pytest.mark.filterwarnings("ignore:The .* function is executing locally")
ROOT = Path(__file__).resolve().parents[3]
APP_SOURCE = ROOT / "policyengine_us_data" / "modal_app" / "app.py"


def test_package_import_does_not_import_modal():
    code = "import sys, policyengine_us_data.modal_app as m; print('modal' in sys.modules, m.MAX_CONTAINERS)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["False", "50"]


def test_app_imports_without_credentials(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update(HOME=str(tmp_path), MODAL_CONFIG_PATH=str(tmp_path / "none.toml"))
    code = "import policyengine_us_data.modal_app.app as a; print(a.app.name)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "policyengine-us-data-pipeline"


def test_exactly_one_app_with_the_pipeline_name():
    apps = [v for m in (app_module, images) for v in vars(m).values() if isinstance(v, modal.App)]
    assert len(apps) == 1 and apps[0].name == "policyengine-us-data-pipeline" == modal_app.APP_NAME
    assert APP_SOURCE.read_text().count("modal.App(") == 1
    assert "modal.App(" not in Path(images.__file__).read_text()


def test_worker_settings_through_info():
    info = app_module.build_matrix_chunk_worker.info()
    assert info.timeout == app_module.WORKER_TIMEOUT_S
    assert info.cpu == app_module.WORKER_CPU and info.memory_mib == app_module.WORKER_MEMORY_MB
    assert list(info.volumes) == ["/staging"]
    assert info.volumes["/staging"].name == modal_app.STAGING_VOLUME_NAME == "local-area-staging"
    coordinator = app_module.build_matrix.info()
    assert coordinator.timeout == 14 * 3600 and coordinator.cpu == 8.0 and coordinator.memory_mib == 65536
    assert list(coordinator.volumes) == ["/staging", "/pipeline-artifacts"]
    assert coordinator.volumes["/pipeline-artifacts"].name == modal_app.ARTIFACTS_VOLUME_NAME == "pipeline-artifacts"


def test_both_functions_are_nonpreemptible_and_the_worker_is_retried():
    worker, coordinator = _decorator_keywords("build_matrix_chunk_worker"), _decorator_keywords("build_matrix")
    assert ast.unparse(worker["nonpreemptible"]) == ast.unparse(coordinator["nonpreemptible"]) == "True"
    assert ast.unparse(worker["retries"]) == "WORKER_RETRIES" and app_module.WORKER_RETRIES >= 1
    assert "retries" not in coordinator  # a second coordinator would race the first for the lease


def _decorator_keywords(function_name: str) -> dict[str, ast.expr]:
    tree = ast.parse(APP_SOURCE.read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == function_name:
            call = node.decorator_list[0]
            return {k.arg: k.value for k in call.keywords}
    raise AssertionError(function_name)


def test_worker_reuses_the_max_containers_ceiling():
    assert modal_app.MAX_CONTAINERS == app_module.MAX_CONTAINERS == 50
    keywords = _decorator_keywords("build_matrix_chunk_worker")
    assert ast.unparse(keywords["max_containers"]) == "MAX_CONTAINERS"
    assert ast.unparse(keywords["image"]) == "image"
    assert "create_if_missing=False" in APP_SOURCE.read_text()


def test_function_names_match_the_dispatcher_lookup():
    tree = ast.parse(APP_SOURCE.read_text())
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert {modal_app.WORKER_FUNCTION, modal_app.COORDINATOR_FUNCTION} <= names


def test_image_activates_the_synced_venv():
    assert images.PYTHON_VERSION == "3.11"
    assert images.VENV_DIR == f"{images.PROJECT_DIR}/.venv" == "/root/policyengine-us-data/.venv"
    assert images.SITE_PACKAGES == f"{images.VENV_DIR}/lib/python3.11/site-packages"
    env = images.IMAGE_ENV
    assert {"VIRTUAL_ENV", "PATH", "PYTHONPATH"} <= set(env)
    assert env["VIRTUAL_ENV"] == images.VENV_DIR
    assert env["PATH"].split(":")[0] == f"{images.VENV_DIR}/bin"
    assert "$" not in env["PATH"] and "/usr/local/bin" in env["PATH"].split(":")
    assert env["PYTHONPATH"].split(":")[0] == images.SITE_PACKAGES
    assert images.UV_BUILD_ENV["UV_PROJECT_ENVIRONMENT"] == images.VENV_DIR
    assert images.UV_BUILD_ENV["UV_PYTHON"].endswith("python3.11")
    assert f"cd {images.PROJECT_DIR} && uv sync" in images.PROJECT_SYNC_COMMAND
    assert images.VENV_DIR in images.BOOT_CHECK_COMMAND
    assert isinstance(images.image, modal.Image)


def test_build_image_chains_env_after_the_sync():
    source = Path(images.__file__).read_text()
    body = source[source.index("def build_image"):]
    assert body.index("PROJECT_SYNC_COMMAND") < body.index(".env(IMAGE_ENV)") < body.index("BOOT_CHECK_COMMAND")


def _fake_kernel(plan: ChunkPlan, state_dir: str) -> ChunkResult:
    Path(plan.shard_path).write_text(json.dumps({"chunk": plan.chunk_id, "state": state_dir}))
    return ChunkResult(plan.chunk_id, plan.col_start, plan.col_end, 1, 1, 1, 0.0, 1.0)


def _publish(tmp_path: Path, run_id: str, n: int = 3) -> None:
    plans = [ChunkPlan(i, i * 5, i * 5 + 5, f"/staging/{run_id}/matrix_chunks/chunk_{i:06d}.npz", "sig")
             for i in range(n)]
    write_plans(plans, tmp_path, run_id)


def test_worker_local_call_runs_the_kernel_without_a_volume(tmp_path, monkeypatch):
    from policyengine_us_data.dispatch import worker

    monkeypatch.setattr(worker, "default_kernel", lambda: _fake_kernel)
    volume = RecordingVolume()
    monkeypatch.setattr(app_module, "staging_volume", volume)
    _publish(tmp_path, "r1")
    outcomes = app_module.build_matrix_chunk_worker.local("r1", [0, 2], staging_root=str(tmp_path))
    assert [(o["chunk_id"], o["ok"]) for o in outcomes] == [(0, True), (2, True)]
    json.dumps(outcomes)  # JSON-able
    shard = tmp_path / "r1" / "matrix_chunks" / "chunk_000002.npz"
    assert json.loads(shard.read_text()) == {"chunk": 2, "state": str(tmp_path / "r1" / "state")}
    assert volume.calls == []  # not in a container: no reload, no commit


def test_worker_in_a_container_reloads_then_commits_after_every_chunk(tmp_path, monkeypatch):
    from policyengine_us_data.dispatch import worker

    monkeypatch.setattr(worker, "default_kernel", lambda: _fake_kernel)
    monkeypatch.setattr(app_module, "in_modal_container", lambda: True)
    volume = RecordingVolume()
    monkeypatch.setattr(app_module, "staging_volume", volume)
    monkeypatch.setenv("PE_STAGING_ROOT", str(tmp_path))
    _publish(tmp_path, "r2")
    outcomes = app_module.build_matrix_chunk_worker.local("r2", [1, 2])
    assert all(o["ok"] for o in outcomes)
    assert volume.calls == ["reload", "commit", "commit", "commit"]  # one per chunk, one in `finally`


def test_worker_of_another_code_identity_refuses_every_chunk(tmp_path, monkeypatch):
    from policyengine_us_data.dispatch import worker

    ran = []
    monkeypatch.setattr(worker, "default_kernel", lambda: lambda plan, state: ran.append(plan))
    _publish(tmp_path, "r4")
    outcomes = app_module.build_matrix_chunk_worker.local("r4", [0, 1], staging_root=str(tmp_path),
                                                          code_identity="0" * 64)
    assert [(o["chunk_id"], o["ok"], o["fatal"]) for o in outcomes] == [(0, False, True), (1, False, True)]
    assert "stale" in outcomes[0]["error"] and "modal deploy" in outcomes[0]["error"] and not ran
    from policyengine_us_data.utils.code_identity import code_identity

    same = app_module.build_matrix_chunk_worker.local("r4", [0], staging_root=str(tmp_path),
                                                      code_identity=code_identity())
    assert not same[0].get("fatal") and len(ran) == 1


def test_worker_gathers_setup_errors_per_chunk(tmp_path):
    outcomes = app_module.build_matrix_chunk_worker.local("r3", [4, 5], staging_root=str(tmp_path))
    assert [(o["chunk_id"], o["ok"]) for o in outcomes] == [(4, False), (5, False)]
    assert "no chunk plans" in outcomes[0]["error"]


def test_worker_refuses_a_bad_run_id(tmp_path):
    with pytest.raises(InputError, match="invalid run id"):
        app_module.build_matrix_chunk_worker.local("../etc", [0], staging_root=str(tmp_path))


def test_runner_args_give_one_flag_per_input():
    args = app_module.runner_args(parallel=True, num_workers=7, n_clones=3, chunk_size=11, target_households=12000)
    assert args == ["--backend", "modal", "--num-matrix-workers", "7", "--n-clones", "3", "--chunk-size", "11",
                    "--target-households", "12000"]
    assert app_module.runner_args(parallel=False, num_workers=1, n_clones=1, chunk_size=1)[:2] == ["--backend", "local"]
    from commands import build_matrix_runner

    ns = build_matrix_runner(ROOT / "never-created").build_parser().parse_args(
        [*args, "--to", "assemble", "--run-id", "r1", "--dataset", "d.h5", "--db", "p.db"])
    assert (ns.backend, ns.num_matrix_workers, ns.n_clones, ns.chunk_size, ns.target_households) == (
        "modal", 7, 3, 11, 12000)


def _coordinator_env(tmp_path, monkeypatch, artifacts: dict[str, bytes] | None = None):
    for name, sub in (("PE_STAGING_ROOT", "staging"), ("PE_ARTIFACTS_ROOT", "artifacts"), ("PE_RUN_SCRATCH", "scratch")):
        (tmp_path / sub).mkdir(exist_ok=True)
        monkeypatch.setenv(name, str(tmp_path / sub))
    for rel, data in (artifacts or {}).items():
        (tmp_path / "artifacts" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "artifacts" / rel).write_bytes(data)


def test_coordinator_runs_the_runner_under_the_lease_and_publishes_its_outputs(tmp_path, monkeypatch):
    _coordinator_env(tmp_path, monkeypatch, {"cps/ecps.h5": b"h5", "policy_data.db": b"db"})
    seen = {}

    def fake_runner(command, env):
        seen.update(command=list(command), env=env)
        lease = json.loads((tmp_path / "staging" / "r1" / "lease.json").read_text())
        assert env["PE_RUN_LEASE_HOLDER"] == lease["holder"]  # the runner's dispatch step inherits the lease
        run_dir = Path(command[command.index("--run-dir") + 1])
        (run_dir / "matrix").mkdir(parents=True)
        (run_dir / "matrix" / "X.npz").write_bytes(b"matrix")
        (run_dir / "report.md").write_text("# Run r1\n\nall good\n")
        return 0, ""

    monkeypatch.setattr(app_module, "run_runner", fake_runner)
    out = app_module.build_matrix.local("r1", ["--backend", "modal"], dataset="artifacts:cps/ecps.h5",
                                        db="artifacts:policy_data.db")
    assert out["status"] == 0 and out["report"] == "# Run r1\n\nall good\n"
    command = seen["command"]
    assert command[:3] == [sys.executable, "-m", "commands.cli"]
    assert command[command.index("--run-dir") + 1] == str(tmp_path / "scratch" / "r1")
    assert command[command.index("--dataset") + 1] == str(tmp_path / "artifacts" / "cps" / "ecps.h5")
    assert command[command.index("--db") + 1] == str(tmp_path / "artifacts" / "policy_data.db")
    assert ["--to", "assemble"] == command[command.index("--to"):command.index("--to") + 2]
    assert (tmp_path / "staging" / "r1" / "run" / "matrix" / "X.npz").read_bytes() == b"matrix"
    assert not (tmp_path / "staging" / "r1" / "lease.json").exists()  # released


def test_coordinator_reports_the_runners_failure(tmp_path, monkeypatch):
    _coordinator_env(tmp_path, monkeypatch)
    monkeypatch.setattr(app_module, "run_runner", lambda command, env: (1, "step dispatch failed: kaput\n"))
    out = app_module.build_matrix.local("r9", [], synthetic=True)
    assert out["status"] == 1 and "kaput" in out["error"] and "No report.md" in out["report"]


def test_coordinator_refuses_a_run_id_another_live_coordinator_holds(tmp_path, monkeypatch):
    _coordinator_env(tmp_path, monkeypatch)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket
        import time

        lease = {"holder": f"{socket.gethostname()}:{sleeper.pid}", "host": socket.gethostname(), "pid": sleeper.pid,
                 "container": "", "heartbeat": time.time(), "heartbeat_utc": "now"}
        (tmp_path / "staging" / "r5").mkdir()
        (tmp_path / "staging" / "r5" / "lease.json").write_text(json.dumps(lease))
        monkeypatch.setattr(app_module, "run_runner", lambda *a: pytest.fail("must not run"))
        out = app_module.build_matrix.local("r5", [], synthetic=True)
        assert out["status"] == 3 and f"pid {sleeper.pid}" in out["error"]
    finally:
        sleeper.kill()
        sleeper.wait()
    monkeypatch.setattr(app_module, "run_runner", lambda command, env: (0, ""))
    assert app_module.build_matrix.local("r5", [], synthetic=True)["status"] == 0  # its holder is dead: taken over


def test_the_image_leaves_out_run_directories_and_data(tmp_path):
    for rel in ("policyengine_us_data/x.py", "matrix-run/matrix/X.npz", "my-run/.runner/journal.json",
                "my-run/chunks/chunk_000000.npz", "my-run/report.md", "my_ecps.h5", "staging/r/matrix_chunks/a",
                "tests/support/toy_simulator.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    ignore = images.project_ignore(tmp_path)
    kept = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")
                  if p.is_file() and not ignore(p.relative_to(tmp_path)))
    assert kept == ["policyengine_us_data/x.py", "tests/support/toy_simulator.py"]
    assert ignore(tmp_path / "my-run" / "report.md")  # absolute paths too
    assert "ignore=project_ignore(root)" in Path(images.__file__).read_text()


def test_the_report_of_a_failed_run_starts_with_the_failure():
    ok = {"run_id": "r", "status": 0, "error": "", "report": "# Run r\n"}
    assert app_module.report_text(ok) == "# Run r\n"
    refused = {"run_id": "r", "status": 3, "error": "run id 'r' is in use by another coordinator (pid 7)\n",
               "report": "_No report.md was written._\n"}
    text = app_module.report_text(refused)
    assert text.startswith("**Run `r` failed (status 3).**") and "pid 7" in text and text.endswith("written._\n")
