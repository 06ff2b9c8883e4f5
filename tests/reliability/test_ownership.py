"""Issue 10's ten cases on a toy build: the runner never loses what it did not make.

Each test names the case it holds (see the README's Guarantees). In-process builds (imports paid once).
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import pytest

from tests.reliability.conftest import main_in_process, read_matrix, toy_args


def _build(run_dir: Path, db: Path, *extra: str, to: str = "assemble") -> int:
    return main_in_process(toy_args(run_dir, db, *extra, to=to))


@pytest.fixture
def built(tmp_path, toy_db, fast_report) -> Path:
    run_dir = tmp_path / "run"
    assert _build(run_dir, toy_db) == 0
    return run_dir


def test_case1_user_files_survive_rerun_reset_and_force(built, toy_db):
    notes = built / "notes.txt"
    notes.write_text("my notes")
    (built / "matrix" / "mine.txt").write_text("in an output folder")
    assert _build(built, toy_db, "--force") == 0
    assert main_in_process(["--run-dir", str(built), "--reset-to", "dataset"]) == 0
    assert _build(built, toy_db, "--force", to="constraints") == 0
    assert notes.read_text() == "my notes"
    moved = list((built / "moved-aside").rglob("mine.txt")) + list((built / "matrix").glob("mine.txt"))
    assert [p.read_text() for p in moved] == ["in an output folder"]


def test_case1_an_input_inside_the_run_directory_is_refused(built, toy_db, capsys):
    before = (built / "dataset" / "dataset.h5").read_bytes()
    code = _build(built, toy_db, "--dataset", str(built / "dataset" / "dataset.h5"), "--n-clones", "3")
    assert code == 2 and "inside the run directory" in capsys.readouterr().err
    assert (built / "dataset" / "dataset.h5").read_bytes() == before and (built / "matrix" / "X.npz").exists()


@pytest.mark.parametrize("flag", [["--n-clones", "437"], ["--seed", "-1"], ["--households", "3000000000"]])
def test_case2_bad_input_found_late_keeps_the_finished_build(built, toy_db, flag, capsys):
    before = read_matrix(built)
    assert _build(built, toy_db, *flag) == 2
    assert read_matrix(built) == before
    capsys.readouterr()
    assert _build(built, toy_db) == 0 and "nothing to run" in capsys.readouterr().out


def test_case3_a_non_empty_foreign_directory_is_refused_until_adopted(tmp_path, toy_db, capsys, fast_report):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("secret")
    assert _build(home, toy_db) == 2 and "--adopt" in capsys.readouterr().err
    assert main_in_process(["--run-dir", str(home), "--clean"]) == 2
    assert sorted(p.name for p in home.iterdir()) == [".ssh"]  # nothing linked or written before acceptance
    assert _build(home, toy_db, "--adopt") == 0
    with open(home / ".ssh" / "id_rsa", "a") as handle:  # an in-place edit of an adopted file changes nothing
        handle.write("\n")
    capsys.readouterr()
    assert _build(home, toy_db) == 0 and "nothing to run" in capsys.readouterr().out
    (home / "later.txt").write_text("made later")
    assert main_in_process(["--run-dir", str(home), "--clean"]) == 0
    assert (home / ".ssh" / "id_rsa").read_text() == "secret\n" and (home / "later.txt").read_text() == "made later"
    assert not (home / "matrix" / "X.npz").exists()


def test_case3_an_empty_pre_existing_directory_keeps_what_the_user_adds(tmp_path, toy_db, fast_report):
    run_dir = tmp_path / "empty"
    run_dir.mkdir()
    assert _build(run_dir, toy_db, to="dataset") == 0
    (run_dir / "mine.txt").write_text("mine")
    assert main_in_process(["--run-dir", str(run_dir), "--clean"]) == 0
    assert (run_dir / "mine.txt").read_text() == "mine"


@pytest.mark.parametrize("how", ["delete", "swap"])
def test_case4_a_missing_or_swapped_output_is_stale(built, toy_db, tmp_path, how, capsys):
    x = built / "matrix" / "X.npz"
    if how == "delete":
        x.unlink()
    else:
        other = tmp_path / "other.npz"
        other.write_bytes(b"another run's matrix")
        os.replace(other, x)
    capsys.readouterr()
    assert main_in_process(["--run-dir", str(built), "--status"]) == 0
    assert f"output {'missing' if how == 'delete' else 'changed'}: matrix/X.npz" in capsys.readouterr().out
    assert _build(built, toy_db) == 0 and read_matrix(built).shape[0] > 0
    if how == "swap":
        assert [p.read_bytes() for p in (built / "moved-aside").rglob("X.npz")] == [b"another run's matrix"]


def test_case6_symlinks_in_the_runner_folder_are_refused(built, toy_db, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("do not truncate")
    lock = built / ".runner" / "lock"
    lock.unlink()
    lock.symlink_to(victim)
    assert _build(built, toy_db, "--force") == 2
    assert "symbolic link" in capsys.readouterr().err and victim.read_text() == "do not truncate"
    lock.unlink()
    log = built / ".runner" / "logs" / "assemble.log"
    log.unlink()
    log.symlink_to(victim)
    assert _build(built, toy_db, "--force") == 2
    assert "symbolic link" in capsys.readouterr().err and victim.read_text() == "do not truncate"


@pytest.mark.parametrize("kind", ["fifo", "device", "dir"])
def test_case7_inputs_must_be_regular_files(built, toy_db, tmp_path, kind, capsys):
    if kind == "fifo":
        path = tmp_path / "pipe"
        os.mkfifo(path)
    elif kind == "device":
        path = Path("/dev/zero")
    else:
        path = tmp_path
    for extra in (["--status"], []):
        assert main_in_process([*toy_args(built, toy_db), "--dataset", str(path), *extra]) == 2
        assert "not a regular file" in capsys.readouterr().err


@pytest.mark.parametrize("change", ["chmod", "touch", "copytree", "move"])
def test_case8_metadata_only_changes_rebuild_nothing(built, toy_db, tmp_path, change, capsys):
    """chmod g+w / touch of every file, a copy without hard links (rsync -a, copytree) and a move to another
    filesystem (cp -a then rm, as mv does across filesystems) change no byte: nothing reruns, resets work."""
    import subprocess

    target = built
    files = [p for p in built.rglob("*") if p.is_file() and ".runner" not in p.relative_to(built).parts]
    if change == "chmod":
        for path in files:
            os.chmod(path, path.stat().st_mode | 0o020)
    elif change == "touch":
        for path in files:
            os.utime(path)
    elif change == "copytree":
        target = tmp_path / "copied"
        shutil.copytree(built, target, symlinks=True, copy_function=shutil.copy2)
    else:
        target = tmp_path / "moved"
        subprocess.run(["cp", "-a", str(built), str(target)], check=True)
        shutil.rmtree(built)
    capsys.readouterr()
    assert _build(target, toy_db) == 0 and "nothing to run" in capsys.readouterr().out
    assert main_in_process(["--run-dir", str(target), "--reset-to", "verify"]) == 0


def test_case9_editing_library_code_a_step_runs_makes_it_stale(built, toy_db, capsys):
    from commands.build_constraint_cache import BuildConstraintCache

    code = BuildConstraintCache.code_identity()
    assert isinstance(code, dict) and any("targets" in f and f.startswith("policyengine_us_data/") for f in code)
    from runner.planning import compare_parts

    stored = {"params": {}, "code": code, "upstream": []}
    edited = dict(code)
    name = next(f for f in code if f.startswith("policyengine_us_data/") and "targets" in f)
    edited[name] = "0" * 16
    cause, reason = compare_parts(stored, {"params": {}, "code": edited, "upstream": []})
    assert cause.name == "CODE" and reason == f"code changed: {name}"


def test_case9_an_identical_rerun_of_an_early_step_keeps_the_shards(built, toy_db, capsys):
    capsys.readouterr()
    assert _build(built, toy_db, "--force", to="dataset") == 0
    capsys.readouterr()
    assert _build(built, toy_db) == 0
    assert "nothing to run" in capsys.readouterr().out


def test_case10_damaged_journal_namespace_types_and_non_utf8_paths(built, toy_db, tmp_path, capsys):
    (built / ".runner" / "journal.json").write_text('{"version": 1, "records": [{"label": "dataset", '
                                                    '"status": "done", "start": "yesterday"}]}')
    assert main_in_process(["--run-dir", str(built), "--status"]) == 0
    err = capsys.readouterr().err
    assert "unreadable" in err and "Traceback" not in err
    from commands import build_matrix_runner

    result = build_matrix_runner(built).run(argparse.Namespace(chunk_size="25"))
    assert result.exit_code == 2 and "--chunk-size" in result.message
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/run-\xff"))
    capsys.readouterr()
    assert _build(odd, toy_db) == 0
    assert "run-\\udcff" in capsys.readouterr().out  # escaped, never an encoding error


@pytest.mark.parametrize("nth", [1, 5, 12])
def test_case5_a_reset_killed_midway_is_finished_before_anything_else(built, toy_db, nth, capsys):
    """SIGKILL on the nth file a `--reset-to dataset` removes or puts back: the next --status never says up
    to date past dataset, and the next run finishes the reset first, then builds the same matrix."""
    from tests.reliability.conftest import run_cli

    expected = read_matrix(built)
    (built / "notes.txt").write_text("mine")
    killed = run_cli(["--run-dir", str(built), "--reset-to", "dataset"], crash_at=f"restore-midway:{nth}")
    assert killed.returncode == -9, killed.stderr
    assert (built / ".runner" / "reset.json").exists()
    capsys.readouterr()
    assert main_in_process(["--run-dir", str(built), "--status"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[1]: line for line in out.splitlines()[1:] if line.split()}
    assert all("stale" in rows[label] for label in ("constraints", "dispatch", "verify", "assemble")), out
    assert _build(built, toy_db) == 0
    assert "finishing a reset that was interrupted" in capsys.readouterr().out
    assert read_matrix(built) == expected and (built / "notes.txt").read_text() == "mine"


def test_case5_ctrl_c_during_a_reset_is_one_line_and_exit_130(built, toy_db, monkeypatch, capsys):
    from runner import checkpoints

    original = checkpoints.place_file
    calls = {"n": 0}

    def interrupted(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(src, dst)

    (built / "dataset" / "summary.json").unlink()
    (built / "constraints" / "summary.json").unlink()
    monkeypatch.setattr(checkpoints, "place_file", interrupted)
    capsys.readouterr()
    assert main_in_process(["--run-dir", str(built), "--reset-to", "constraints"]) == 130
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "interrupted" in err
    monkeypatch.setattr(checkpoints, "place_file", original)
    assert _build(built, toy_db) == 0 and (built / "matrix" / "X.npz").exists()


def test_case3_an_empty_run_dir_flag_means_the_current_directory_and_is_refused(tmp_path, toy_db, monkeypatch,
                                                                                 capsys):
    cwd = tmp_path / "work"
    cwd.mkdir()
    (cwd / "keep.txt").write_text("mine")
    monkeypatch.chdir(cwd)
    assert main_in_process(["--run-dir", "", "--to", "dataset", "--households", "50"]) == 2
    assert "not empty" in capsys.readouterr().err and sorted(p.name for p in cwd.iterdir()) == ["keep.txt"]
