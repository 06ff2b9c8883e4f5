"""What a script and a returning user rely on: remembered values only from a success (an interrupted attempt
keeps its own), --status/--dry-run --json, a running build shown as running, and quick checks first."""

from __future__ import annotations

import argparse
import json
import os
import socket

from runner import BaseCommand, BuildState, CommandRunner, InputError
from runner.lock import RunDirLock


def _dispatch_text(run_dir) -> str:
    return (run_dir / "dispatch.txt").read_text()


def test_a_value_that_failed_is_not_remembered(toy, run_dir, capsys):
    assert toy.main(["--chunk-size", "500"]) == 0
    toy.toy.fail["dispatch"] = "command"
    assert toy.main(["--chunk-size", "7"]) == 1
    toy.toy.calls.clear()
    assert toy.main([]) == 0  # dispatch reruns (its last attempt failed) with the last value that worked
    assert '"chunk_size": 500' in _dispatch_text(run_dir)
    assert "chunk_size=7" not in capsys.readouterr().out


def test_an_interrupted_run_keeps_its_new_values_for_every_step_it_meant_to_run(toy, run_dir):
    assert toy.main([]) == 0
    toy.toy.fail["cache"] = "interrupt"
    assert toy.main(["--year", "2023", "--chunk-size", "9"]) == 130  # Ctrl-C before dispatch ever started
    assert toy.main([]) == 0  # the same command without the flags: both values still apply
    assert '"year": 2023' in (run_dir / "cache.txt").read_text()
    assert '"chunk_size": 9' in _dispatch_text(run_dir)


def test_reset_to_keeps_the_values_of_the_steps_it_forgets(toy, run_dir):
    assert toy.main(["--chunk-size", "11", "--year", "2023"]) == 0
    assert toy.main(["--reset-to", "cache"]) == 0
    toy.toy.calls.clear()
    assert toy.main([]) == 0
    assert toy.toy.ran == ["dispatch", "verify", "assemble"]
    assert '"chunk_size": 11' in _dispatch_text(run_dir)


def test_status_json_names_states_remembered_values_and_changes(toy, run_dir, capsys):
    assert toy.main(["--chunk-size", "500"]) == 0
    capsys.readouterr()
    assert toy.main(["--status", "--json", "--chunk-size", "600"]) == 0
    report = json.loads(capsys.readouterr().out)  # strict JSON, one object
    assert report["run_dir"] == str(run_dir) and report["exists"] and report["running"] is None
    steps = {s["label"]: s for s in report["steps"]}
    assert set(steps["dispatch"]) >= {"order", "label", "state", "cause", "reason", "finished", "duration_s",
                                      "bytes_written", "params", "changes"}
    assert steps["cache"]["state"] == "done" and steps["cache"]["params"] == {"year": 2024}
    assert steps["dispatch"]["state"] == "stale" and steps["dispatch"]["cause"] == "params changed"
    assert steps["dispatch"]["params"] == {"chunk_size": 500}
    assert steps["dispatch"]["changes"] == {"chunk_size": [500, 600]}
    assert toy.main(["--status", "--chunk-size", "600"]) == 0
    text = capsys.readouterr().out
    assert "  dispatch: chunk_size=500" in text
    assert "this command line changes dispatch: chunk_size 500 -> 600" in text


def test_dry_run_json_lists_the_steps_to_run(toy, run_dir, capsys):
    assert toy.main(["--to", "cache"]) == 0
    capsys.readouterr()
    assert toy.main(["--dry-run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["target"] == "assemble" and report["up_to_date"] == ["prepare", "cache"]
    assert [s["label"] for s in report["run"]] == ["dispatch", "verify", "assemble"]
    assert report["run"][0]["cause"] == "never run" and report["start"]["action"] == "reset"
    assert report["start"]["to"] == "cache"


def test_status_shows_a_build_holding_the_lock_as_running(toy, run_dir, capsys):
    assert toy.main(["--to", "cache"]) == 0
    record = toy_journal_start(toy, run_dir)
    with RunDirLock(run_dir / ".runner" / "lock", run_dir):
        capsys.readouterr()
        assert toy.main(["--status"]) == 0
        text = capsys.readouterr().out
        assert f"running now: pid {os.getpid()} on host {socket.gethostname()} since " in text
        row = next(line for line in text.splitlines() if line.split()[1:2] == ["dispatch"])
        assert "running" in row and "interrupted" not in row
        assert toy.main(["--status", "--json"]) == 0
        running = json.loads(capsys.readouterr().out)["running"]
        assert running["pid"] == os.getpid() and running["step"] == "dispatch" and running["since"] > 0
    assert toy.main(["--status"]) == 0  # the lock is gone: the same open record reads as interrupted
    assert "interrupted" in capsys.readouterr().out
    assert record["status"] == "running"


def toy_journal_start(toy, run_dir):
    from runner.journal import Journal

    return Journal(run_dir / ".runner" / "journal.json").start("dispatch", "f", {"params": {}}, "never run")


class _Slow(BaseCommand):
    checked: list[str] = []

    def run(self, state: BuildState) -> None:  # pragma: no cover - never reached
        raise AssertionError

    @classmethod
    def validate(cls, args: argparse.Namespace) -> None:
        cls.checked.append("slow validate")


class _Quick(BaseCommand):
    def run(self, state: BuildState) -> None:  # pragma: no cover - never reached
        raise AssertionError

    @classmethod
    def precheck(cls, args: argparse.Namespace) -> None:
        raise InputError("missing file for the late step")


def test_every_quick_check_runs_before_any_slow_validation(tmp_path):
    runner = CommandRunner(tmp_path / "run")
    runner.register("first", 0)(_Slow)
    runner.register("second", 1)(_Quick)
    _Slow.checked.clear()
    result = runner.run([])
    assert result.exit_code == 2 and "missing file for the late step" in result.message
    assert _Slow.checked == []  # refused before the first step's slow validation began
