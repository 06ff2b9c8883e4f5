"""Bad input: exit 2, one message on stderr that names the problem and the fix, and the run directory unchanged.

Every case but two runs against a finished toy build, so "unchanged" protects real work: a bad flag must not
reset the directory, drop checkpoints or journal an attempt (the runner validates the steps about to run
before it touches anything: `BaseCommand.validate`). What "unchanged" means: every file and directory under
the run directory, `.runner/` included (journal, logs, checkpoints, stamps), keeps its size and mtime;
the only exceptions are `.runner/lock`, whose advisory text (pid, host, time) every runner that takes the lock
rewrites, and `.runner/`'s own mtime, which the writability probe moves.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest

from tests.reliability.conftest import (
    _stub_figure,
    main_in_process,
    run_cli,
    toy_args,
    tree_state,
)
from tests.support.target_db import every_rule_targets, make_target_db

pytestmark = pytest.mark.timeout(120)
VOLATILE = {".runner/lock", ".runner"}


def stable_state(run_dir: Path) -> dict:
    return {k: v for k, v in tree_state(run_dir).items() if k not in VOLATILE}


_BUILDS: dict[str, tuple[Path, dict]] = {}


def _cached_build(kind: str, tmp_path_factory, toy_db) -> Path:
    """A finished toy build ("complete") or one run only --to constraints ("partial"), reused while unchanged."""
    cached = _BUILDS.get(kind)
    if cached and stable_state(cached[0]) == cached[1]:
        return cached[0]
    run_dir = tmp_path_factory.mktemp(kind) / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("policyengine_us_data.outputs.report_figure.render_figure", _stub_figure)
        mp.setattr("runner.fsutil.FSYNC", False)
        to = "assemble" if kind == "complete" else "constraints"
        assert main_in_process(toy_args(run_dir, toy_db, to=to)) == 0
    _BUILDS[kind] = (run_dir, stable_state(run_dir))
    return run_dir


# ----------------------------------------------------------------------------- bad files
def _valid_arrays() -> tuple[dict[str, np.ndarray], int]:
    from policyengine_us_data.datasets.synthetic import generate_synthetic

    data = generate_synthetic(8, seed=1)
    return {k: np.asarray(v) for k, v in data.arrays.items()}, data.period


def _write_h5(path: Path, arrays: dict[str, np.ndarray], period: int) -> Path:
    """PolicyEngine layout, written raw (write_dataset would refuse the broken ones)."""
    with h5py.File(path, "w") as handle:
        for name, array in arrays.items():
            if array.dtype.kind == "U":
                array = array.astype("S")
            handle.create_group(name).create_dataset(str(period), data=array)
    return path


def h5_without_person_id(tmp: Path) -> Path:
    arrays, period = _valid_arrays()
    del arrays["person_id"]
    return _write_h5(tmp / "no_person_id.h5", arrays, period)


def h5_dangling_links(tmp: Path) -> Path:
    arrays, period = _valid_arrays()
    arrays["person_household_id"] = arrays["person_household_id"].copy()
    arrays["person_household_id"][0] = 987654
    return _write_h5(tmp / "dangling.h5", arrays, period)


def h5_unequal_lengths(tmp: Path) -> Path:
    arrays, period = _valid_arrays()
    arrays["age"] = arrays["age"][:-1]
    return _write_h5(tmp / "unequal.h5", arrays, period)


def not_hdf5(tmp: Path) -> Path:
    path = tmp / "households.h5"
    path.write_text("person_id,age\n1,30\n")
    return path


def _db(tmp: Path, name: str, rows=None, sql: str | None = None) -> Path:
    path = tmp / name
    make_target_db(path, rows if rows is not None else every_rule_targets([6], [601]))
    if sql:
        con = sqlite3.connect(path)
        con.executescript(sql)
        con.commit()
        con.close()
    return path


def db_missing_table(tmp: Path) -> Path:
    return _db(tmp, "no_table.db", sql="DROP TABLE stratum_constraints;")


def db_missing_column(tmp: Path) -> Path:
    return _db(tmp, "no_column.db", sql="ALTER TABLE targets DROP COLUMN active;")


def db_unknown_operation(tmp: Path) -> Path:
    return _db(tmp, "bad_op.db", rows=[("person_count", [("age", "~=", "18")], 1e6, 0)])


def db_unparsable_value(tmp: Path) -> Path:
    return _db(tmp, "bad_value.db", rows=[("person_count", [("age", ">=", "eighteen")], 1e6, 0)])


def db_unknown_target_variable(tmp: Path) -> Path:
    return _db(tmp, "bad_target.db", rows=[("household_count", [], 1e6, 0), ("no_such_variable", [], 1.0, 0)])


def db_unknown_constraint_variable(tmp: Path) -> Path:
    return _db(tmp, "bad_constraint.db", rows=[("household_count", [("no_such_flag", "==", "1")], 1e6, 0)])


# ----------------------------------------------------------------------------- the cases
@dataclass(frozen=True)
class Case:
    """argv after --run-dir (a callable gets the temp dir), the words the message must contain (problem and
    fix, case-insensitive), and which run directory it runs against."""

    id: str
    argv: list[str] | Callable[[Path], list[str]]
    words: tuple[str, ...]
    build: str = "complete"
    env: dict[str, str | None] = field(default_factory=dict)  # set: run in a subprocess with this environment


def _file_flag(flag: str, make: Callable[[Path], Path]) -> Callable[[Path], list[str]]:
    return lambda tmp: ["--to", "assemble", flag, str(make(tmp))]


NO_MODAL_CREDENTIALS = {"MODAL_TOKEN_ID": None, "MODAL_TOKEN_SECRET": None, "MODAL_PROFILE": None}

CASES = [
    Case("missing-dataset", ["--to", "assemble", "--dataset", "/nonexistent/households.h5"],
         ("dataset file not found", "check the path")),
    Case("not-hdf5", _file_flag("--dataset", not_hdf5), ("not an hdf5 file", "pass a policyengine .h5")),
    Case("no-person-id", _file_flag("--dataset", h5_without_person_id), ("'person_id' is missing", "regenerate")),
    Case("dangling-links", _file_flag("--dataset", h5_dangling_links),
         ("point at ids that do not exist", "987654", "fix the link")),
    Case("unequal-lengths", _file_flag("--dataset", h5_unequal_lengths), ("'age' has length", "fix or drop")),
    Case("db-missing", ["--to", "assemble", "--db", "/nonexistent/policy_data.db"], ("does not exist", "pass the path")),
    Case("db-missing-table", _file_flag("--db", db_missing_table),
         ("table 'stratum_constraints' is missing", "upstream's schema")),
    Case("db-missing-column", _file_flag("--db", db_missing_column), ("lacks column(s) active", "required")),
    Case("unknown-operation", _file_flag("--db", db_unknown_operation), ("unknown operation '~='", "allowed", "fix")),
    Case("unparsable-value", _file_flag("--db", db_unparsable_value),
         ("'eighteen' does not parse as a number", "fix the value")),
    Case("unknown-target-variable", _file_flag("--db", db_unknown_target_variable), ("no_such_variable",)),
    Case("unknown-constraint-variable", _file_flag("--db", db_unknown_constraint_variable), ("no_such_flag",)),
    Case("chunk-size-0", ["--to", "assemble", "--chunk-size", "0"], ("chunk", "positive integer", "--chunk-size")),
    Case("chunk-size-negative", ["--to", "assemble", "--chunk-size", "-25"], ("chunk", "-25", "positive integer")),
    Case("n-clones-0", ["--to", "assemble", "--n-clones", "0"], ("--n-clones", "positive integer", "got 0")),
    Case("households-negative", ["--to", "assemble", "--households", "-3"], ("--households", "positive integer")),
    Case("workers-0", ["--to", "assemble", "--chunk-size", "30", "--workers", "0"], ("--workers", "positive integer")),
    Case("unknown-geo-level", ["--to", "assemble", "--geo-levels", "county"], ("county", "national")),
    Case("unparsable-target-ids", ["--to", "assemble", "--target-ids", "1,two"], ("'1,two'", "comma-separated")),
    Case("to-unknown-label", ["--to", "assembly"], ("--to assembly", "unknown step", "dataset, constraints")),
    Case("reset-to-unknown-label", ["--reset-to", "dispatches"], ("--reset-to dispatches", "unknown step", "verify")),
    Case("reset-to-never-ran", ["--reset-to", "verify"], ("no checkpoint of verify", "never ran"), build="partial"),
    # --backend and --run-id do not define the output: these run where dispatch has yet to run
    Case("run-id-with-slash", ["--to", "assemble", "--backend", "modal", "--run-id", "team/run1"],
         ("invalid run id 'team/run1'", "no '/'", "--run-id"), build="partial"),
    Case("run-id-dotdot", ["--to", "assemble", "--backend", "modal", "--run-id", ".."],
         ("invalid run id '..'", "no '..'"), build="partial"),
    Case("modal-without-credentials", ["--to", "assemble", "--backend", "modal", "--run-id", "rel-test"],
         ("modal credentials", "modal token new", "--backend local"), build="partial", env=NO_MODAL_CREDENTIALS),
]


def _argv(case: Case, tmp: Path) -> list[str]:
    return case.argv(tmp) if callable(case.argv) else list(case.argv)


def _subprocess_env(case: Case, tmp: Path) -> dict[str, str]:
    """Overrides for the subprocess: a home and a Modal config file that hold no credentials."""
    env = {"HOME": str(tmp / "home"), "MODAL_CONFIG_PATH": str(tmp / "home" / "no-modal.toml")}
    (tmp / "home").mkdir(exist_ok=True)
    return env


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_2_with_one_clear_message_and_changes_nothing(case, tmp_path, tmp_path_factory, toy_db,
                                                                      capsys, monkeypatch):
    run_dir = _cached_build(case.build, tmp_path_factory, toy_db)
    argv = ["--run-dir", str(run_dir), *_argv(case, tmp_path)]
    before = stable_state(run_dir)
    if case.env:
        for name in case.env:
            monkeypatch.delenv(name, raising=False)
        for name, value in _subprocess_env(case, tmp_path).items():
            monkeypatch.setenv(name, value)
        done = run_cli(argv, timeout=120)
        code, err = done.returncode, done.stderr
    else:
        capsys.readouterr()
        code = main_in_process(argv)
        err = capsys.readouterr().err
    assert code == 2, f"exit {code}: {err}"
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one message, got:\n{err}"
    for word in case.words:
        assert word.lower() in lines[0].lower(), f"{word!r} missing from: {lines[0]}"
    assert stable_state(run_dir) == before, "bad input changed the run directory"


def test_an_unwritable_run_directory(tmp_path, capsys):
    """`--run-dir` below a regular file: no mkdir can succeed, root or not (a chmod would not stop root)."""
    blocker = tmp_path / "afile"
    blocker.write_text("a file, not a directory\n")
    capsys.readouterr()
    code = main_in_process(["--run-dir", str(blocker / "run"), "--to", "dataset"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "cannot use run directory" in err and "not a directory" in err.lower()
    assert "choose a run directory you can create and write to" in err  # the fix
    assert blocker.read_text() == "a file, not a directory\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_run_directory_that_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "run"
    blocker.write_text("not a directory\n")
    capsys.readouterr()
    code = main_in_process(["--run-dir", str(blocker), "--to", "dataset"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "is not a directory" in err and "choose another run directory" in err
    assert blocker.read_text() == "not a directory\n"


def test_resuming_chunks_after_the_dataset_changed_names_the_lineage_field(tmp_path, toy_db):
    """`UnifiedMatrixBuilder.build_matrix_chunked(resume_chunks=True)` (what `unified_calibration
    --chunked-matrix --resume-chunks` calls) on shards of another dataset: LineageMismatch, an InputError
    (the CLI's exit 2), naming `dataset_sha256` and the fix; the old shards are left alone."""
    from policyengine_us_data.datasets.geography import assign_geography
    from policyengine_us_data.calibration.unified_matrix_builder import UnifiedMatrixBuilder
    from policyengine_us_data.datasets.h5io import read_dataset, write_dataset
    from policyengine_us_data.datasets.household_data import HouseholdData
    from policyengine_us_data.datasets.synthetic import generate_synthetic
    from policyengine_us_data.errors import InputError, LineageMismatch
    from tests.reliability.conftest import TOY_SIM

    dataset, chunks = tmp_path / "households.h5", tmp_path / "chunks"
    data = generate_synthetic(20, seed=4)
    write_dataset(dataset, data)
    geography = assign_geography(data.n_households, 2, seed=0)

    def build():
        builder = UnifiedMatrixBuilder(toy_db, 2024, dataset, work_dir=tmp_path / "work", simulator=TOY_SIM)
        return builder.build_matrix_chunked(geography, chunk_size=10, chunk_dir=str(chunks), keep_chunks=True,
                                            resume_chunks=True)

    build()
    shards = {p.name: p.stat().st_mtime_ns for p in chunks.iterdir()}
    arrays = dict(read_dataset(dataset).arrays)
    arrays["age"] = np.asarray(arrays["age"]) + 1  # same households, different people
    write_dataset(dataset, HouseholdData(arrays, data.period))

    with pytest.raises(LineageMismatch) as caught:
        build()
    assert isinstance(caught.value, InputError)
    message = str(caught.value)
    assert "dataset_sha256" in message and "Rerun without resume" in message
    assert "geography_sha256" not in message and "chunk_size" not in message
    assert {p.name: p.stat().st_mtime_ns for p in chunks.iterdir()} == shards
