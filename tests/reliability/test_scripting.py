"""What scripts and returning users rely on, on the real steps with the toy simulator: a running build shown as
running, --status/--dry-run --json, --progress json and on_progress, remembered flags that survive Ctrl-C but
not a failure, --no- forms, and bad input refused before policyengine-us is imported."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.reliability.conftest import (
    REPO,
    SLOW_SIM,
    TOY_SIM,
    main_in_process,
    run_cli,
    start_cli,
    subprocess_env,
    toy_args,
    wait_for,
)

pytestmark = pytest.mark.timeout(180)


def _journal(run_dir: Path) -> list[dict]:
    try:
        return json.loads((run_dir / ".runner" / "journal.json").read_text())["records"]
    except (OSError, ValueError, KeyError):
        return []


def _dispatching(run_dir: Path, process: subprocess.Popen) -> bool:
    assert process.poll() is None, process.communicate()[1][-2000:]
    return any(r.get("label") == "dispatch" and r.get("status") == "running" for r in _journal(run_dir))


def _events(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_status_shows_a_running_build_as_running(tmp_path, toy_db):
    run_dir = tmp_path / "run"
    build = start_cli(toy_args(run_dir, toy_db, simulator=SLOW_SIM), SLOW_TOY_DELAY="1.0")
    try:
        wait_for(lambda: _dispatching(run_dir, build), 60, "the build to start dispatching")
        status = run_cli(["--run-dir", str(run_dir), "--status"], timeout=60)
        as_json = run_cli(["--run-dir", str(run_dir), "--status", "--json"], timeout=60)
        assert build.poll() is None, "the build ended before --status looked: nothing was tested"
    finally:
        build.send_signal(signal.SIGTERM)
        build.communicate(timeout=60)
    assert status.returncode == 0, status.stderr
    assert f"running now: pid {build.pid} on host " in status.stdout, status.stdout
    row = next(line for line in status.stdout.splitlines() if line.split()[1:2] == ["dispatch"])
    assert row.split()[2] == "running" and "interrupted" not in row, row
    report = json.loads(as_json.stdout)
    assert report["running"]["pid"] == build.pid and report["running"]["step"] == "dispatch"
    assert {s["label"]: s["state"] for s in report["steps"]}["dispatch"] == "running"


def test_progress_json_announces_the_warm_up_then_each_chunk(tmp_path, toy_db):
    run_dir = tmp_path / "run"
    done = run_cli([*toy_args(run_dir, toy_db), "--progress", "json"])
    assert done.returncode == 0, done.stderr[-2000:]
    events = _events(done.stderr)
    kinds = [(e["event"], e.get("phase") or e.get("label"), e.get("status")) for e in events]
    warm = kinds.index(("phase", "warm-up", "start"))
    first_chunk = next(i for i, e in enumerate(events) if e["event"] == "chunk")
    assert warm < kinds.index(("phase", "warm-up", "done")) < first_chunk
    assert ("step", "dispatch", "running") in kinds and ("step", "assemble", "done") in kinds
    chunks = [e for e in events if e["event"] == "chunk"]
    total = json.loads((run_dir / "chunks" / "dispatch.json").read_text())["chunks"]
    assert [c["done"] for c in chunks] == list(range(1, total + 1)) and {c["total"] for c in chunks} == {total}
    assert chunks[-1]["columns_done"] == chunks[-1]["columns_total"] == 120 and chunks[-1]["eta_s"] == 0
    assert all(c["elapsed_s"] >= 0 and "time" in c for c in chunks)
    assert "chunks:" not in done.stderr  # no bar mixed into the JSON lines


def test_a_python_caller_gets_the_same_progress(tmp_path, toy_db, fast_report):
    from commands import build_matrix_runner

    events: list[dict] = []
    ns = argparse.Namespace(to="assemble", households=60, n_clones=2, chunk_size=25, db=str(toy_db), workers=1,
                            simulator=TOY_SIM)
    assert build_matrix_runner(tmp_path / "run", on_progress=events.append).run(ns).ok
    phases = [(e["phase"], e["status"]) for e in events if e["event"] == "phase"]
    assert ("warm-up", "start") in phases and ("warm-up", "done") in phases
    chunks = [e for e in events if e["event"] == "chunk"]
    assert chunks and chunks[-1]["done"] == chunks[-1]["total"]
    assert [e["label"] for e in events if e["event"] == "step" and e["status"] == "done"] == \
        ["dataset", "constraints", "dispatch", "verify", "assemble"]


def test_dry_run_counts_the_chunks_and_estimates_from_the_last_measured_ones(tmp_path, toy_db, fast_report, capsys):
    run_dir = tmp_path / "run"
    assert main_in_process([*toy_args(run_dir, toy_db), "--dry-run", "--json"]) == 0
    before = {s["label"]: s for s in json.loads(capsys.readouterr().out)["run"]}
    assert before["dispatch"]["details"]["estimate_s"] is None
    assert main_in_process([*toy_args(run_dir, toy_db), "--dry-run"]) == 0
    assert "estimate: no measurement yet" in capsys.readouterr().out
    assert main_in_process(toy_args(run_dir, toy_db)) == 0
    built = json.loads((run_dir / "chunks" / "dispatch.json").read_text())["chunks"]
    assert before["dispatch"]["details"]["chunks"] == built  # the count the dispatch step then made
    capsys.readouterr()
    assert main_in_process([*toy_args(run_dir, toy_db), "--dry-run", "--chunk-size", "40"]) == 0
    out = capsys.readouterr().out
    assert "estimate ~" in out and "measured in this run directory's last dispatch" in out, out
    assert "matrix:" not in out  # a dry run never points at a result as if it were current
    assert main_in_process([*toy_args(run_dir, toy_db), "--dry-run", "--json", "--chunk-size", "40"]) == 0
    details = {s["label"]: s for s in json.loads(capsys.readouterr().out)["run"]}["dispatch"]["details"]
    assert details["estimate_s"] > 0 and details["measured"]["chunks_measured"] == built


def test_remembered_flags_survive_ctrl_c_and_a_failed_value_is_not_remembered(tmp_path, toy_db):
    run_dir = tmp_path / "run"
    args = toy_args(run_dir, toy_db, "--deep", "--package-output", "pkg.pkl", simulator=SLOW_SIM)
    # 3 s a chunk, so the Ctrl-C lands in dispatch even if this test process stalls for seconds on a loaded
    # machine (at 1 s a chunk one CI run got exit 0, most likely the build finishing before the signal was sent)
    build = subprocess.Popen([sys.executable, "-m", "commands.cli", *args], cwd=REPO,
                             env=subprocess_env(SLOW_TOY_DELAY="3.0"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a terminal's job
    wait_for(lambda: _dispatching(run_dir, build), 60, "the build to start dispatching")
    build.send_signal(signal.SIGINT)
    assert build.wait(timeout=60) == 130
    again = run_cli(["--run-dir", str(run_dir), "--to", "assemble"])  # the same build, flags not repeated
    assert again.returncode == 0, again.stderr[-2000:]
    assert (run_dir / "pkg.pkl").is_file()
    assert json.loads((run_dir / "verify" / "verify.json").read_text())["deep"] is True
    (run_dir / "afile").write_text("a file, not a directory\n")
    failed = run_cli(["--run-dir", str(run_dir), "--to", "assemble", "--package-output", "afile/x.pkl"])
    assert failed.returncode != 0
    status = json.loads(run_cli(["--run-dir", str(run_dir), "--status", "--json"]).stdout)
    assert {s["label"]: s for s in status["steps"]}["assemble"]["params"]["package_output"] == "pkg.pkl"


def test_every_remembered_boolean_can_be_switched_off(tmp_path, toy_db, fast_report):
    from commands import build_matrix_runner

    runner = build_matrix_runner(tmp_path / "never")
    actions = {a.dest: a for a in runner.build_parser()._actions}  # noqa: SLF001
    booleans = [dest for step in runner.steps for dest in step.cls.params
                if actions[dest].nargs == 0 or isinstance(actions[dest], argparse.BooleanOptionalAction)]
    assert set(booleans) >= {"deep", "out_of_core", "skip_takeup_rerandomize"}
    for dest in booleans:
        assert isinstance(actions[dest], argparse.BooleanOptionalAction), dest
        assert f"--no-{dest.replace('_', '-')}" in actions[dest].option_strings
    run_dir = tmp_path / "run"
    assert main_in_process(toy_args(run_dir, toy_db, "--deep")) == 0
    assert main_in_process(["--run-dir", str(run_dir), "--to", "assemble", "--no-deep"]) == 0
    assert json.loads((run_dir / "verify" / "verify.json").read_text())["deep"] is False


CHECK_IMPORT = ("import sys\nfrom commands.cli import main\ncode = main(sys.argv[1:])\n"
                "print('policyengine_us imported' if 'policyengine_us' in sys.modules else 'not imported')\n"
                "sys.exit(code)\n")


@pytest.mark.parametrize("bad", [
    ["--db", "/nonexistent/policy_data.db"],
    ["--package-output", "/nonexistent-dir/calibration_package.pkl"],
    ["--backend", "modal"],
    ["--dataset", "/nonexistent/ecps.h5", "--db", "/nonexistent/policy_data.db"],
], ids=["missing-db", "bad-package-output", "modal-without-credentials", "missing-dataset"])
def test_bad_input_is_refused_before_policyengine_us_is_imported(tmp_path, bad):
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", CHECK_IMPORT, "--run-dir", str(tmp_path / "run"), "--to",
                           "assemble", *bad], cwd=REPO, env=subprocess_env(MODAL_TOKEN_ID="", MODAL_TOKEN_SECRET=""),
                          capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert done.stdout.strip().endswith("not imported"), done.stdout
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    assert elapsed < 30, f"{elapsed:.1f}s"  # generous: the import alone takes ~40 s


def test_the_report_states_the_total_time_and_the_warm_up(tmp_path, toy_db, fast_report):
    run_dir = tmp_path / "run"
    assert main_in_process(toy_args(run_dir, toy_db)) == 0
    timings = json.loads((run_dir / "report.json").read_text())["metadata"]["timings"]
    assert timings["warm_up_seconds"] is not None and timings["warm_up_seconds"] >= 0
    steps = [r for r in _journal(run_dir) if r.get("status") == "done" and r["label"] != "assemble"]
    assert timings["total_seconds"] >= sum(r["duration_s"] for r in steps) > 0
    header = (run_dir / "report.md").read_text().split("\n## ")[0]
    assert "Build time" in header and "in total" in header and "warm-up" in header
