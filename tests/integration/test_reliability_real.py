"""The reliability promises with the real policyengine-us (tests/reliability/ holds the toy-simulator suite).

One small build shape throughout (20 households x 2 clones, chunks of 20 columns: two chunks), and one
module-scoped story that covers every kind once:

- kill and resume: a subprocess build is SIGKILLed inside the kernel after its first chunk (MATRIX_CRASH_AT);
  while it runs, a second build on the same directory is refused with exit 3 naming it (concurrency); after the
  kill a new build starts without cleanup, recomputes only the unfinished chunk, and its matrix equals an
  uninterrupted build's;
- corruption: a shard edited in place inside the checkpoint is repaired alone, the matrix unchanged;
- bad input: a target variable policyengine-us does not know exits 2 with one message, nothing changed;
- resuming chunks after the dataset changed: `unified_calibration --chunked-matrix --resume-chunks` exits 2
  naming `dataset_sha256`.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.reliability.conftest import (
    main_in_process,
    manifest_chunks,
    read_matrix,
    start_cli,
    temp_files,
    tree_state,
    wait_for,
)
from tests.support.target_db import every_rule_targets, make_target_db

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
SHAPE = ("--households", "20", "--n-clones", "2", "--chunk-size", "20", "--workers", "1")


def real_args(run_dir: Path, db: Path, *extra: str) -> list[str]:
    return ["--run-dir", str(run_dir), "--to", "assemble", *SHAPE, "--db", str(db), *extra]


@pytest.fixture(scope="module")
def small_db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("real-db") / "targets.db"
    make_target_db(path, every_rule_targets([6, 36], [601]))
    return path


def _lock_holder(run_dir: Path) -> int | None:
    try:
        return json.loads((run_dir / ".runner" / "lock").read_text() or "{}").get("pid")
    except (OSError, ValueError):
        return None


@pytest.fixture(scope="module")
def story(tmp_path_factory, small_db):
    """Kill a real build inside the kernel (second chunk), race it, resume it; build a reference meanwhile.
    The subprocess starts first, so its policyengine-us import overlaps this process's."""
    root = tmp_path_factory.mktemp("real-reliability")
    killed_dir, reference_dir = root / "killed", root / "reference"
    args = real_args(killed_dir, small_db)
    proc = start_cli(args, MATRIX_CRASH_AT="kernel-simulated:2")
    try:
        wait_for(lambda: _lock_holder(killed_dir) == proc.pid or proc.poll() is not None, 300,
                 "the killed build to take the lock")
        raced = main_in_process(args) if proc.poll() is None else None  # refused while it runs
        assert main_in_process(real_args(reference_dir, small_db)) == 0  # uninterrupted, meanwhile
        out, err = proc.communicate(timeout=500)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    finished = manifest_chunks(killed_dir)
    started = time.monotonic()
    resumed = main_in_process(args)
    return {"proc": proc, "err": err, "raced": raced, "finished": finished, "resumed": resumed,
            "resume_seconds": time.monotonic() - started, "killed_dir": killed_dir, "reference": reference_dir,
            "args": args}


def test_a_real_build_killed_in_the_kernel_resumes_to_the_same_matrix(story):
    assert story["proc"].returncode == -signal.SIGKILL, story["err"][-2000:]
    assert list(story["finished"]) == [0], "the kill should come after chunk 0 finished, inside chunk 1"
    assert story["resumed"] == 0
    after = manifest_chunks(story["killed_dir"])
    assert after[0] == story["finished"][0], "chunk 0 was computed again"
    assert after[1]["attempts"] == 1
    assert read_matrix(story["killed_dir"]) == read_matrix(story["reference"])
    assert temp_files(story["killed_dir"]) == []


def test_a_second_real_build_on_the_directory_is_refused_while_the_first_runs(story, capsys):
    assert story["raced"] == 3, "the second build was not refused with exit 3 (or the first ended too soon)"


def test_a_real_shard_edited_in_place_is_repaired_alone(story, capsys):
    run_dir = story["killed_dir"]
    before = manifest_chunks(run_dir)
    shard = run_dir / "chunks" / "chunk_000001.npz"
    with open(shard, "r+b") as handle:
        middle = os.fstat(handle.fileno()).st_size // 2
        handle.seek(middle)
        byte = handle.read(1)
        handle.seek(middle)
        handle.write(bytes([byte[0] ^ 0xFF]))
    capsys.readouterr()
    assert main_in_process(story["args"]) == 0
    assert "repairing dispatch" in capsys.readouterr().out
    after = manifest_chunks(run_dir)
    assert after[0] == before[0] and after[1]["attempts"] == before[1]["attempts"] + 1
    assert read_matrix(run_dir) == read_matrix(story["reference"])


def test_a_target_variable_unknown_to_policyengine_us_changes_nothing(story, tmp_path, capsys):
    run_dir = story["reference"]
    bad_db = tmp_path / "bad.db"
    make_target_db(bad_db, [("household_count", [], 1e6, 0), ("not_a_policyengine_variable", [], 1.0, 0)])
    volatile = {".runner/lock", ".runner"}
    before = {k: v for k, v in tree_state(run_dir).items() if k not in volatile}
    capsys.readouterr()
    code = main_in_process(["--run-dir", str(run_dir), "--to", "assemble", "--db", str(bad_db)])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "not_a_policyengine_variable" in err
    assert {k: v for k, v in tree_state(run_dir).items() if k not in volatile} == before


def test_unified_calibration_refuses_to_resume_chunks_of_another_dataset(tmp_path, small_db, pe_simulator, capsys):
    from policyengine_us_data.calibration import unified_calibration
    from policyengine_us_data.datasets.h5io import write_dataset
    from policyengine_us_data.datasets.household_data import HouseholdData
    from policyengine_us_data.datasets.synthetic import generate_synthetic

    dataset = tmp_path / "households.h5"
    data = generate_synthetic(20, seed=2)
    write_dataset(dataset, data)
    argv = ["--dataset", str(dataset), "--db", str(small_db), "--n-clones", "1", "--chunked-matrix", "--chunk-size",
            "20", "--resume-chunks", "--keep-chunks", "--chunk-dir", str(tmp_path / "chunks"), "--output-dir",
            str(tmp_path / "out")]
    assert unified_calibration.main(argv) == 0
    arrays = dict(data.arrays)
    arrays["age"] = arrays["age"] + 1
    write_dataset(dataset, HouseholdData(arrays, data.period))
    capsys.readouterr()
    assert unified_calibration.main(argv) == 2
    err = capsys.readouterr().err
    assert "dataset_sha256" in err and "Rerun without resume" in err
