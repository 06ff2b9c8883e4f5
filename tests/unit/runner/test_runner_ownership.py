"""Ownership, the previous build kept through a failed rerun, code identity by imports, hardened state."""

from __future__ import annotations

import argparse
import importlib
import sys
import textwrap

from runner import CommandRunner
from runner.checkpoints import CheckpointStore


def test_a_failed_rerun_keeps_the_previous_build_whole(toy, run_dir, live):
    """Later checkpoints are replaced only when the steps replacing them succeed: after cache and dispatch
    reran and verify failed, --reset-to assemble gives back the old build and every step is up to date."""
    assert toy.run([]).exit_code == 0
    old = live(run_dir)
    toy.toy.fail["verify"] = "command"
    result = toy.run(["--year", "1999"])
    assert result.exit_code == 1 and "--reset-to assemble brings it back" in result.message
    assert toy.run(["--reset-to", "assemble"]).exit_code == 0
    assert live(run_dir) == old
    status = toy.run(["--year", "2024", "--status"])
    assert status.skipped == ("prepare", "cache", "dispatch", "verify", "assemble")


def test_status_says_the_previous_build_is_kept(toy, capsys):
    toy.run([])
    toy.run(["--to", "cache", "--year", "1999"])
    capsys.readouterr()
    toy.main(["--status"])
    assert "the previous build is kept: --reset-to assemble brings it back" in capsys.readouterr().out


def test_code_identity_follows_project_imports(tmp_path, monkeypatch):
    """Editing a module the step's module imports (not the step's own file) makes it stale, naming the file."""
    pkg = tmp_path / "toyproj"
    (pkg / "lib").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "lib" / "__init__.py").write_text("")
    (pkg / "lib" / "targets.py").write_text("VALUE = 1\n")
    (pkg / "step.py").write_text(textwrap.dedent("""
        from runner import BaseCommand
        from .lib import targets
        import json  # not the project's: not part of the identity

        class Step(BaseCommand):
            def run(self, state):
                (state.run_dir / "out.txt").write_text(str(targets.VALUE))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    step = importlib.import_module("toyproj.step").Step
    runner = CommandRunner(tmp_path / "run")
    runner.register("only", 0)(step)
    assert runner.run([]).ran == ("only",)
    assert runner.run([]).ran == ()
    (pkg / "lib" / "targets.py").write_text("VALUE = 2\n")
    runner.run(["--dry-run"])
    plan_result = runner.run([])
    assert plan_result.ran == ("only",)
    journal = (tmp_path / "run" / ".runner" / "journal.json").read_text()
    assert "code changed: toyproj/lib/targets.py" in journal
    sys.modules.pop("toyproj.step", None)


def test_namespace_values_of_the_wrong_type_exit_2(toy):
    result = toy.run(argparse.Namespace(chunk_size="25"))
    assert result.exit_code == 2 and "--chunk-size" in result.message and "'25'" in result.message
    assert toy.run(argparse.Namespace(force="yes")).exit_code == 2


def test_a_damaged_manifest_shape_is_a_checkpoint_error_not_a_crash(toy, run_dir):
    toy.run(["--to", "cache"])
    path = run_dir / ".runner" / "checkpoints" / "cache" / "manifest.json"
    path.write_text(path.read_text().replace('"by": "cache"', '"by": 7'))
    result = toy.run(["--status"])
    assert result.exit_code == 0
    assert toy.run(["--to", "cache"]).ran == ("cache",)
    assert CheckpointStore(run_dir).load("cache") is not None


def test_a_symlinked_journal_is_refused_and_its_target_untouched(toy, run_dir, tmp_path):
    toy.run(["--to", "prepare"])
    victim = tmp_path / "victim.json"
    victim.write_text("keep")
    journal = run_dir / ".runner" / "journal.json"
    journal.unlink()
    journal.symlink_to(victim)
    toy.run(["--to", "cache"])
    assert victim.read_text() == "keep"


def test_without_xxhash_the_runner_falls_back_to_blake2b(toy, run_dir, monkeypatch):
    """runner/ stays importable and correct without the optional xxhash package."""
    monkeypatch.setattr("runner.fsutil._xxh3", None)
    assert toy.run([]).exit_code == 0
    manifest = CheckpointStore(run_dir).load("assemble")
    assert all(entry["hash"].startswith("b2:") for entry in manifest.files.values())
    import os

    os.utime(run_dir / "cache.txt")  # a touch: the stat moved, the bytes did not
    assert toy.run([]).ran == ()
