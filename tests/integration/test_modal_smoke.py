"""Smoke test against the real deployment: the image boots, the worker runs the kernel on the volume.

Runs only with MODAL_SMOKE=1 and Modal credentials (MODAL_TOKEN_ID/MODAL_TOKEN_SECRET or a
~/.modal.toml), after `modal deploy policyengine_us_data/modal_app/app.py`. It uploads a toy build
state and one chunk plan to the staging volume under a fresh run id, calls the deployed worker,
reads the shard back and removes the run directory; then runs the coordinator on 30 synthetic
households (2 chunks, 2 workers, the real policyengine-us) and reads the matrix back.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.modal_smoke


def _credentials() -> bool:
    if os.environ.get("MODAL_TOKEN_ID") and os.environ.get("MODAL_TOKEN_SECRET"):
        return True
    return Path(os.environ.get("MODAL_CONFIG_PATH", Path.home() / ".modal.toml")).is_file()


if os.environ.get("MODAL_SMOKE") != "1" or not _credentials():
    pytest.skip("Modal smoke test: set MODAL_SMOKE=1 and Modal credentials (`modal token new`) to run it "
                "against a deployed app", allow_module_level=True)

import modal  # noqa: E402

from policyengine_us_data.dispatch import lookup_worker, new_run_id, volume_plans  # noqa: E402
from policyengine_us_data.shards.chunk_plan import ChunkPlan  # noqa: E402
from policyengine_us_data.modal_app import STAGING_MOUNT, STAGING_VOLUME_NAME  # noqa: E402
from policyengine_us_data.utils.atomic import atomic_write_json  # noqa: E402

TOY = "tests.support.toy_simulator:ToySimulator"


def test_deployed_worker_boots_and_gathers_errors():
    """The venv fix: the container imports the stack, and a run without plans is an outcome, not a crash."""
    worker = lookup_worker()
    outcomes = worker.remote(f"smoke-missing-{int(time.time())}", [0])
    assert outcomes[0]["ok"] is False
    assert "no chunk plans" in outcomes[0]["error"], outcomes[0]
    assert "ModuleNotFoundError" not in outcomes[0]["error"]


def test_deployed_worker_writes_a_shard_on_the_volume(tmp_path):
    from policyengine_us_data.kernel.build_state import write_build_state
    from policyengine_us_data.datasets.geography import assign_geography
    from policyengine_us_data.targets.targets import load_targets
    from policyengine_us_data.datasets.synthetic import generate_synthetic
    from tests.support.target_db import every_rule_targets, make_target_db

    run_id = "smoke-" + new_run_id()
    local = tmp_path / run_id
    data, geography = generate_synthetic(10, seed=1), assign_geography(10, 2, seed=2)
    db = make_target_db(tmp_path / "t.db", every_rule_targets([6], []))
    write_build_state(local / "state", data=data, geography=geography, targets=load_targets(db, 2024),
                      year=2024, simulator=TOY)
    plans = volume_plans([ChunkPlan(0, 0, 20, "x", "smoke")], STAGING_MOUNT, run_id)
    atomic_write_json(local / "matrix_chunks" / "plans.json",
                      {"format": 1, "run_id": run_id, "plans": [p.to_json() for p in plans]})
    volume = modal.Volume.from_name(STAGING_VOLUME_NAME, create_if_missing=False)
    with volume.batch_upload(force=True) as batch:
        batch.put_directory(str(local), f"/{run_id}")
    try:
        outcomes = lookup_worker().remote(run_id, [0])
        assert outcomes[0]["ok"], outcomes[0]
        shard = b"".join(volume.read_file(f"/{run_id}/matrix_chunks/chunk_000000.npz"))
        assert shard[:2] == b"PK" and len(shard) > 100
    finally:
        volume.remove_file(f"/{run_id}", recursive=True)


def test_deployed_coordinator_runs_the_pipeline_on_synthetic_households():
    """The whole production path, small: the coordinator's runner fans 2 chunks out to the deployed workers."""
    from policyengine_us_data.modal_app import APP_NAME, COORDINATOR_FUNCTION

    run_id = "smoke-" + new_run_id()
    coordinator = modal.Function.from_name(APP_NAME, COORDINATOR_FUNCTION)
    volume = modal.Volume.from_name(STAGING_VOLUME_NAME, create_if_missing=False)
    try:
        result = coordinator.remote(run_id, ["--backend", "modal", "--num-matrix-workers", "2", "--households", "30",
                                             "--n-clones", "2", "--chunk-size", "30"], synthetic=True)
        assert result["status"] == 0, result["error"]
        assert "No report.md" not in result["report"]
        matrix = b"".join(volume.read_file(f"/{run_id}/run/matrix/X.npz"))
        assert matrix[:2] == b"PK"
    finally:
        volume.remove_file(f"/{run_id}", recursive=True)
