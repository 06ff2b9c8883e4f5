"""The remote worker's body (plans.json, outcomes) and the staging root."""

from __future__ import annotations

from pathlib import Path

import pytest
from dispatch_fakes import FakeKernel, make_plans

from policyengine_us_data.dispatch import (
    read_plans,
    run_worker_batch,
    staging_root,
    volume_plans,
    write_plans,
)
from policyengine_us_data.errors import InputError


def test_plans_round_trip_and_are_re_rooted(tmp_path):
    plans = volume_plans(make_plans(tmp_path / "x", 3), "/staging", "r1")
    assert plans[1].shard_path == "/staging/r1/matrix_chunks/chunk_000001.npz"
    write_plans(plans, tmp_path, "r1")
    read = read_plans(tmp_path, "r1")
    assert sorted(read) == [0, 1, 2]
    assert read[2].shard_path == str(tmp_path / "r1" / "matrix_chunks" / "chunk_000002.npz")
    assert (read[2].col_start, read[2].col_end, read[2].lineage_signature) == (20, 30, "sig")


def test_worker_batch_gathers_errors(tmp_path):
    write_plans(make_plans(tmp_path, 3), tmp_path, "r1")
    kernel = FakeKernel(tmp_path / "a", fail={1: -1})
    outcomes = run_worker_batch("r1", [0, 1, 2, 7], root=tmp_path, kernel=kernel)
    assert [(o["chunk_id"], o["ok"]) for o in outcomes] == [(0, True), (1, False), (2, True), (7, False)]
    assert "boom" in outcomes[1]["error"] and "not in plans.json" in outcomes[3]["error"]
    assert (tmp_path / "r1" / "matrix_chunks" / "chunk_000002.npz").exists()
    assert outcomes[0]["result"]["chunk_id"] == 0


def test_worker_reads_state_from_the_run_directory_unless_told(tmp_path):
    write_plans(make_plans(tmp_path, 1), tmp_path, "r1")
    seen = []
    run_worker_batch("r1", [0], root=tmp_path, kernel=lambda plan, state: seen.append(state) or FakeKernel(
        tmp_path / "a")(plan, state))
    run_worker_batch("r1", [0], root=tmp_path, state_dir="/elsewhere", kernel=lambda plan, state: seen.append(state)
                     or FakeKernel(tmp_path / "b")(plan, state))
    assert seen == [str(tmp_path / "r1" / "state"), "/elsewhere"]


def test_missing_or_broken_plans(tmp_path):
    with pytest.raises(InputError, match="no chunk plans"):
        read_plans(tmp_path, "r1")
    path = tmp_path / "r1" / "matrix_chunks" / "plans.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(InputError, match="unreadable"):
        read_plans(tmp_path, "r1")
    with pytest.raises(InputError, match="invalid run id"):
        run_worker_batch("../r1", [0], root=tmp_path, kernel=FakeKernel(tmp_path / "a"))


def test_staging_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("PE_STAGING_ROOT", raising=False)
    assert staging_root() == Path("/staging")
    monkeypatch.setenv("PE_STAGING_ROOT", str(tmp_path))
    assert staging_root() == tmp_path
    assert staging_root("/explicit") == Path("/explicit")


def test_importing_the_dispatchers_is_cheap():
    import subprocess
    import sys

    code = ("import sys, policyengine_us_data.dispatch; "
            "print(sorted(m for m in ('modal', 'policyengine_us', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
