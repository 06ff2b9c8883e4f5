"""The Modal app offline: imports without credentials, settings, the venv image env, the worker body."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import modal
import pytest

from policyengine_us_data import modal_app
from policyengine_us_data.calibration.chunk_dispatch import write_plans
from policyengine_us_data.calibration.chunk_plan import ChunkPlan, ChunkResult
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
    assert list(coordinator.volumes) == ["/staging"]


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
    from policyengine_us_data.calibration.chunk_dispatch import worker

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
    from policyengine_us_data.calibration.chunk_dispatch import worker

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
    from policyengine_us_data.calibration.chunk_dispatch import worker

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


def test_pipeline_cli_args_give_one_flag_per_input():
    args = app_module.pipeline_cli_args(chunked_matrix=True, parallel=True, num_workers=7, n_clones=3, chunk_size=11)
    assert args == ["--chunked-matrix", "--parallel", "--num-matrix-workers", "7", "--n-clones", "3",
                    "--chunk-size", "11"]
    off = app_module.pipeline_cli_args(chunked_matrix=False, parallel=False, num_workers=1, n_clones=1, chunk_size=1)
    assert off[:2] == ["--no-chunked-matrix", "--no-parallel"]
    argv = app_module.coordinator_argv("r1", args)
    from policyengine_us_data.calibration.unified_calibration import build_parser

    ns = build_parser().parse_args(argv)  # every flag is one the CLI accepts
    assert (ns.chunked_matrix, ns.parallel, ns.num_matrix_workers, ns.n_clones, ns.chunk_size) == (True, True, 7, 3, 11)
    assert ns.run_id == "r1" and ns.chunk_dir == "/staging/r1/matrix_chunks"
    assert ns.package_output == "/staging/r1/package/calibration_package.pkl"
    assert ns.output_dir == "/staging/r1/output"


def test_coordinator_runs_the_cli_and_returns_the_report(tmp_path, monkeypatch):
    calls = []

    def fake_main(argv):
        calls.append(argv)
        run = tmp_path / "r1"
        (run / "package").mkdir(parents=True)
        (run / "package" / "report.md").write_text("# Run r1\n\nall good\n")
        return 0

    module = types.ModuleType(app_module.CALIBRATION_MODULE)
    module.main = fake_main
    monkeypatch.setitem(sys.modules, app_module.CALIBRATION_MODULE, module)
    monkeypatch.setenv("PE_STAGING_ROOT", str(tmp_path))
    out = app_module.build_matrix.local("r1", ["--chunked-matrix", "--parallel"])
    assert out["status"] == 0 and out["report"] == "# Run r1\n\nall good\n"
    assert calls[0][:2] == ["--chunked-matrix", "--parallel"] and "--run-id" in calls[0]
    assert calls[0][calls[0].index("--chunk-dir") + 1] == str(tmp_path / "r1" / "matrix_chunks")


def test_coordinator_reports_a_failure_instead_of_raising(tmp_path, monkeypatch):
    module = types.ModuleType(app_module.CALIBRATION_MODULE)

    def broken(argv):
        raise RuntimeError("kaput")

    module.main = broken
    monkeypatch.setitem(sys.modules, app_module.CALIBRATION_MODULE, module)
    monkeypatch.setenv("PE_STAGING_ROOT", str(tmp_path))
    out = app_module.build_matrix.local("r9", [])
    assert out["status"] == 1 and "kaput" in out["error"] and "No report.md" in out["report"]
