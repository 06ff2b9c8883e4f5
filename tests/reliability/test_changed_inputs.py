"""An input file edited in place after a build: the step that reads it reruns, with that reason, and the matrix
follows the new content. Copying the file over itself with the same bytes reruns nothing."""

from __future__ import annotations

import shutil
import sqlite3

from tests.reliability.conftest import main_in_process, manifest_chunks, read_matrix, toy_args


def _status(args: list[str], capsys) -> dict[str, str]:
    capsys.readouterr()
    assert main_in_process([*args, "--status"]) == 0
    return {line.split()[1]: line for line in capsys.readouterr().out.splitlines()[1:] if line.split()}


def test_an_edited_target_database_reruns_constraints_and_changes_the_targets(tmp_path, toy_db, fast_report,
                                                                             capsys):
    db = tmp_path / "targets.db"
    shutil.copyfile(toy_db, db)
    run_dir = tmp_path / "run"
    args = toy_args(run_dir, db)
    assert main_in_process(args) == 0
    before = read_matrix(run_dir)
    chunks_before = manifest_chunks(run_dir)

    shutil.copyfile(db, tmp_path / "same.db")
    shutil.move(tmp_path / "same.db", db)  # same bytes, new file: nothing to redo
    assert "done" in _status(args, capsys)["constraints"]

    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE targets SET value = value * 2")
    rows = _status(args, capsys)
    assert "input file changed" in rows["constraints"] and "done" in rows["dataset"]
    assert "an earlier step will re-run: constraints" in rows["assemble"]

    assert main_in_process(args) == 0
    after = read_matrix(run_dir)
    assert after.targets_csv != before.targets_csv  # the doubled values reached targets.csv
    assert set(manifest_chunks(run_dir)) == set(chunks_before)
    assert "done" in _status(args, capsys)["constraints"]
