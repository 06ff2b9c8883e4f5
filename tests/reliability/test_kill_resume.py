"""Kill and resume: SIGKILL the build at seeded random moments; the rerun must finish with the same matrix,
recompute no finished chunk, and leave no temp file behind.

Each trial runs `python -m commands.cli ... --to assemble` (toy simulator) in a subprocess with
MATRIX_CRASH_AT and RUNNER_CRASH_AT=<point>:<N>, so the process kills itself the N-th time it reaches that crash point
(policyengine_us_data/utils/crash_points.py, runner/crash_points.py). N is drawn below the number of times an
uninterrupted build reaches the point (counted in the baseline build), so every trial must die by SIGKILL.
The rerun (no variable) runs in this process through the same `commands.cli.main`.
"""

from __future__ import annotations

import json
import random
import shutil

import pytest

from tests.reliability.conftest import (
    CRASH_POINTS,
    count_crash_points,
    main_in_process,
    manifest_chunks,
    read_matrix,
    run_cli,
    temp_files,
    toy_args,
)

SEED = 20261121
N_TRIALS = 20


def _trials() -> list[tuple[str, float]]:
    """(crash point, fraction of its reach count): every point four times, in a seeded random order."""
    rng = random.Random(SEED)
    points = [CRASH_POINTS[i % len(CRASH_POINTS)] for i in range(N_TRIALS)]
    rng.shuffle(points)
    return [(point, rng.random()) for point in points]


TRIALS = _trials()
# With two workers the kernel and shard writes happen in forked workers (their own counters), so the
# parallel trials use points only the main process reaches.
PARALLEL_TRIALS = [("checkpoint-midway", random.Random(SEED + 1).random()),
                   ("journal-before-rename", random.Random(SEED + 2).random())]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, toy_db):
    """An uninterrupted build: its matrix, and how often it reaches each crash point."""
    from tests.reliability.conftest import _stub_figure

    run_dir = tmp_path_factory.mktemp("baseline") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("policyengine_us_data.outputs.report_figure.render_figure", _stub_figure)
        counts = count_crash_points(mp)
        assert main_in_process(toy_args(run_dir, toy_db)) == 0
    assert set(counts) >= set(CRASH_POINTS), f"a crash point is never reached: {counts}"
    assert json.loads((run_dir / "chunks" / "dispatch.json").read_text())["chunk_plan"] == "state"  # the default
    return read_matrix(run_dir), dict(counts)


def _kill_and_resume(tmp_path, toy_db, baseline, point: str, fraction: float, workers: int, *extra: str) -> None:
    expected, counts = baseline
    n = 1 + int(fraction * counts[point])
    run_dir = tmp_path / "run"
    args = toy_args(run_dir, toy_db, *extra, workers=workers)

    killed = run_cli(args, crash_at=f"{point}:{n}")
    assert killed.returncode == -9, (f"{point}:{n} of {counts[point]} should have killed the build; "
                                     f"exit {killed.returncode}\n{killed.stderr[-2000:]}")
    before = manifest_chunks(run_dir)  # chunks finished before the kill

    assert main_in_process(args) == 0, f"the rerun after {point}:{n} failed"
    assert read_matrix(run_dir) == expected, f"the matrix after {point}:{n} differs from an uninterrupted build"
    after = manifest_chunks(run_dir)
    assert set(after) == set(range(json.loads((run_dir / "chunks" / "dispatch.json").read_text())["chunks"]))
    recomputed = [cid for cid, record in before.items() if after.get(cid) != record]
    assert not recomputed, f"chunks finished before the kill were computed again: {recomputed}"
    assert temp_files(run_dir) == [], f"temp files left behind after {point}:{n}"
    shutil.rmtree(run_dir)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("point,fraction", TRIALS, ids=[f"{i:02d}-{p}" for i, (p, _) in enumerate(TRIALS)])
def test_kill_at_a_crash_point_then_resume(point, fraction, tmp_path, toy_db, baseline, fast_report):
    _kill_and_resume(tmp_path, toy_db, baseline, point, fraction, workers=1)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("point,fraction", PARALLEL_TRIALS, ids=[p for p, _ in PARALLEL_TRIALS])
def test_kill_a_parallel_build_then_resume(point, fraction, tmp_path, toy_db, baseline, fast_report):
    _kill_and_resume(tmp_path, toy_db, baseline, point, fraction, workers=2)


@pytest.mark.timeout(120)
def test_kill_a_contiguous_plan_build_then_resume_to_the_state_plans_matrix(tmp_path, toy_db, baseline, fast_report):
    """The baseline is built with the (default) state plan: the contiguous plan, killed and resumed, gives it too."""
    _kill_and_resume(tmp_path, toy_db, baseline, "atomic-before-rename", 0.5, 1, "--chunk-plan", "contiguous")


@pytest.mark.timeout(120)
def test_a_worker_killed_in_the_kernel_fails_the_step_and_the_rerun_completes(tmp_path, toy_db, baseline,
                                                                            fast_report):
    """Every forked worker dies by SIGKILL on its first chunk: dispatch fails (exit 1) with a message naming
    the dead worker, keeps nothing half-written, and the rerun completes with the same matrix."""
    run_dir = tmp_path / "run"
    args = toy_args(run_dir, toy_db, workers=2)
    failed = run_cli(args, crash_at="kernel-simulated:1")
    assert failed.returncode == 1, failed.stderr[-2000:]
    assert "worker process died" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert manifest_chunks(run_dir) == {}
    assert main_in_process(args) == 0
    assert read_matrix(run_dir) == baseline[0]
    assert temp_files(run_dir) == []
