"""Bad values, not only bad shapes (issue 13): exit 2, one message naming every problem and the fix, and the run
directory unchanged; a cell that cannot be computed fails the build naming chunk, household and variable.

Datasets with NaN, inf, negative or all-zero weights, impossible state codes, fractional or huge ids, and a tiny file
declaring a 10^9-element variable; target databases whose constraint values do not fit the variable's type;
path flags of the wrong kind. Runs against the finished toy build of test_bad_input.py (same cache).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest

from tests.reliability.conftest import REPO, main_in_process, subprocess_env, toy_args
from tests.reliability.test_bad_input import _cached_build, _db, _valid_arrays, _write_h5, stable_state
from tests.support.toy_simulator import ToySimulator

pytestmark = pytest.mark.timeout(120)


# ----------------------------------------------------------------------------- bad datasets
def _h5_with(name: str, change: Callable[[dict[str, np.ndarray]], None]) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        arrays, period = _valid_arrays()
        arrays = {k: v.copy() for k, v in arrays.items()}
        change(arrays)
        return _write_h5(tmp / name, arrays, period)
    return make


def _set(variable: str, position: int, value, dtype=None) -> Callable[[dict[str, np.ndarray]], None]:
    def change(arrays: dict[str, np.ndarray]) -> None:
        if dtype is not None:
            arrays[variable] = arrays[variable].astype(dtype)
        arrays[variable][position] = value
    return change


def _both(*changes):
    return lambda arrays: [change(arrays) for change in changes]


def _household_id(arrays: dict[str, np.ndarray], position: int, new_id: int) -> None:
    """Give a household a new id, and its members the matching link (only the id's value is wrong)."""
    old = arrays["household_id"][position]
    arrays["household_id"][position] = new_id
    arrays["person_household_id"][arrays["person_household_id"] == old] = new_id


def _zero_weights(arrays: dict[str, np.ndarray]) -> None:
    arrays["household_weight"] = np.zeros_like(arrays["household_weight"])


DATASETS = {
    "nan-weight": (_h5_with("nan_weight.h5", _set("household_weight", 5, np.nan)),
                   ("household_weight: 1 nan at household 5", "fix the file")),
    "inf-income": (_h5_with("inf_income.h5", _set("employment_income_before_lsr", 3, np.inf)),
                   ("employment_income_before_lsr: 1 inf at person 3",)),
    "negative-weights": (_h5_with("negative.h5", _both(_set("household_weight", 1, -2.0),
                                                       _set("household_weight", 6, -1.0))),
                         ("household_weight: 2 negative weight(s) at households 1, 6",)),
    "all-zero-weights": (_h5_with("zero.h5", _zero_weights), ("household_weight: every weight is 0", "positive")),
    "state-fips-99": (_h5_with("fips99.h5", _set("state_fips", 2, 99)),
                      ("state_fips: 1 value(s) that are not a state fips code", "at household 2")),
    "state-fips-negative": (_h5_with("fips_neg.h5", _set("state_fips", 4, -5)), ("state_fips", "at household 4")),
    "fractional-person-id": (_h5_with("frac.h5", _set("person_id", 2, 0.5, np.float64)),
                             ("person_id: 1 non-integer id(s) at person 2",)),
    "id-near-2-40": (_h5_with("big_id.h5", lambda a: _household_id(a, 3, 2**40)),
                     ("household_id: 1 id(s) outside 0..2,147,483,647 at household 3",)),
    "problems-listed-together": (_h5_with("several.h5", _both(_set("household_weight", 7, np.nan),
                                                              _set("state_fips", 0, 99))),
                                 ("2 problem(s)", "household_weight: 1 nan at household 7",
                                  "state_fips: 1 value(s)", "at household 0")),
}


def huge_declared_variable(tmp: Path) -> Path:
    """A small file whose `age` declares 10^9 float64 values (7.45 GiB if read) and stores none of them."""
    arrays, period = _valid_arrays()
    del arrays["age"]
    path = _write_h5(tmp / "huge.h5", arrays, period)
    with h5py.File(path, "a") as handle:
        handle.create_group("age").create_dataset(str(period), shape=(10**9,), dtype="f8", chunks=(1 << 20,),
                                                  compression="gzip")
    return path


# ----------------------------------------------------------------------------- bad target databases
DATABASES = {
    "sql-in-a-numeric-value": (
        lambda tmp: _db(tmp, "sql.db", rows=[("person_count", [("age", "==", "1; DROP TABLE targets")], 1e6, 0)]),
        ("age == '1; drop table targets'", "numeric", "give a finite number")),
    "number-for-a-boolean": (
        lambda tmp: _db(tmp, "bool.db", rows=[("person_count", [("medicaid_enrolled", "==", "7")], 1e6, 0)]),
        ("medicaid_enrolled == 7", "boolean", "true or false")),
    "unknown-variable-closest-names": (
        lambda tmp: _db(tmp, "typo.db", rows=[("household_cont", [], 1e6, 0), ("snap", [("age", ">=", "18")], 1.0, 0)]),
        ("household_cont", "did you mean household_count")),
    "db-problems-listed-together": (
        lambda tmp: _db(tmp, "several.db", rows=[("person_count", [("age", "~=", "18")], 1e6, 0),
                                                 ("person_count", [("age", ">=", "eighteen")], 1e6, 0),
                                                 ("household_count", [("snap", ">", "zero")], 1e6, 0)]),
        ("3 problems", "unknown operation '~='", "'eighteen' does not parse", "'zero' does not parse")),
    "db-is-a-directory": (lambda tmp: tmp, ("is a directory, not a regular file", "pass the path of the file")),
}


# ----------------------------------------------------------------------------- bad path flags
def _a_file(tmp: Path) -> Path:
    path = tmp / "some_file"
    path.write_text("a file\n")
    return path


PACKAGES = {
    "package-parent-missing": (lambda tmp: tmp / "no" / "such" / "dir" / "pkg.pkl",
                               ("does not exist", "mkdir -p", "or choose another path")),
    "package-parent-is-a-file": (lambda tmp: _a_file(tmp) / "x.pkl", ("some_file is a file, not a directory",)),
    "package-is-a-directory": (lambda tmp: tmp, ("is a directory", "give a file path")),
    "dataset-is-a-directory": (None, ("is a directory, not a regular file", "pass the path of the file")),
}


def _cases():
    for key, (make, words) in DATASETS.items():
        yield pytest.param("--dataset", make, words, id=key)
    yield pytest.param("--dataset", huge_declared_variable, ("'age' has length 1,000,000,000", "fix or drop"),
                       id="huge-declared-variable")
    for key, (make, words) in DATABASES.items():
        yield pytest.param("--db", make, words, id=key)
    for key, (make, words) in PACKAGES.items():
        flag = "--dataset" if make is None else "--package-output"
        yield pytest.param(flag, make or (lambda tmp: tmp), words, id=key)


@pytest.mark.parametrize("flag, make, words", list(_cases()))
def test_bad_values_exit_2_with_every_problem_in_one_message_and_change_nothing(
        flag, make, words, tmp_path, tmp_path_factory, toy_db, capsys):
    run_dir = _cached_build("complete", tmp_path_factory, toy_db)
    before = stable_state(run_dir)
    value = make(tmp_path)
    outside = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    capsys.readouterr()
    code = main_in_process(["--run-dir", str(run_dir), "--to", "assemble", flag, str(value)])
    err = capsys.readouterr().err
    assert code == 2, f"exit {code}: {err}"
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one message, got:\n{err}"
    for word in words:
        assert word.lower() in lines[0].lower(), f"{word!r} missing from: {lines[0]}"
    assert stable_state(run_dir) == before, "bad input changed the run directory"
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == outside, \
        "bad input created something outside the run directory"


def test_a_huge_declared_variable_is_refused_under_a_3_gb_memory_limit(tmp_path):
    """Reading the 10^9 values would need 7.45 GiB; the check reads the declared shape, not the data."""
    path = huge_declared_variable(tmp_path)
    assert path.stat().st_size < 200_000
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30)); "
            "from commands.cli import main; sys.exit(main(sys.argv[1:]))")
    argv = ["--run-dir", str(tmp_path / "run"), "--to", "dataset", "--dataset", str(path)]
    done = subprocess.run([sys.executable, "-c", code, *argv], cwd=REPO, env=subprocess_env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "MemoryError" not in done.stderr and "Traceback" not in done.stderr
    assert "'age' has length 1,000,000,000" in done.stderr


def test_a_relative_package_path_cannot_leave_the_run_directory(tmp_path, tmp_path_factory, toy_db, capsys):
    run_dir = _cached_build("complete", tmp_path_factory, toy_db)
    before = stable_state(run_dir)
    capsys.readouterr()
    code = main_in_process(["--run-dir", str(run_dir), "--to", "assemble", "--package-output", "../../pkg.pkl"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "cannot leave it with '..'" in err and "absolute path" in err
    assert stable_state(run_dir) == before


# ----------------------------------------------------------------------------- non-finite cells and strict reports
class NanToySimulator(ToySimulator):
    """The toy simulator with one household's net income NaN: a formula that cannot compute a cell."""

    name = "tests.reliability.test_bad_values:NanToySimulator"
    BAD_HOUSEHOLD = 7
    calls = 0

    def compute(self, data, request):
        NanToySimulator.calls += 1
        output = super().compute(data, request)
        if "household_net_income" in output.own_entity:
            ids = np.asarray(data.arrays["household_id"])
            values = output.own_entity["household_net_income"].astype(np.float64)
            values[ids == self.BAD_HOUSEHOLD] = np.nan  # the chunk's 8th household (fresh ids 0..n-1)
            output.own_entity["household_net_income"] = values
        return output


def test_a_cell_that_cannot_be_computed_fails_naming_chunk_household_and_variable(tmp_path, toy_db, capsys,
                                                                                 fast_report):
    run_dir = tmp_path / "run"
    capsys.readouterr()
    NanToySimulator.calls = 0
    # the contiguous plan, so chunk 0's 8th household is column 7 (base household 7, clone 0)
    code = main_in_process(toy_args(run_dir, toy_db, "--chunk-plan", "contiguous", simulator=NanToySimulator.name))
    captured = capsys.readouterr()
    text = captured.err + captured.out
    assert code == 1, text
    assert "chunk 0" in text and "household_net_income" in text and "not finite" in text
    assert "household_id 7" in text and "column 7" in text
    assert NanToySimulator.calls <= 5 + 1, "a non-finite cell is deterministic: no chunk is retried"
    assert not (run_dir / "matrix" / "X.npz").exists()
    assert not list((run_dir / "chunks").glob("chunk_*.npz"))


def test_report_json_is_strict_json_and_the_report_never_prints_nan(tmp_path):
    """A weight that cannot be summed (NaN) gives null figures in report.json and n/a in report.md."""
    import scipy.sparse as sp

    from policyengine_us_data.targets.targets import Constraint, TargetRow, TargetTable
    from policyengine_us_data.outputs import report as report_module

    rows = tuple(TargetRow(i, i + 1, 1, "snap", 2024, 0, 100.0, 100.0, "national", 0, "US",
                           (Constraint("snap", ">", 0),), f"national/snap/{i}") for i in range(2))
    matrix = sp.csr_matrix(np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 3.0]]))
    weights = np.array([1.0, np.nan, 2.0])
    report_module.build_report(tmp_path, matrix=matrix, targets=TargetTable(rows, 2024), weights=weights,
                               chunk_results=[])

    def refuse(constant: str):
        raise ValueError(f"report.json holds {constant}, which JSON.parse rejects")

    document = json.loads((tmp_path / "report.json").read_text(), parse_constant=refuse)
    assert document["fit"]["weights"]["sum"] is None
    markdown = (tmp_path / "report.md").read_text().lower()
    assert not re.search(r"\b(nan|inf)\b", markdown), markdown


def test_unified_calibration_checks_path_flags_before_building(tmp_path, capsys):
    """Upstream's CLI: a directory for --db or --dataset, and a --package-output under a file, exit 2 at once."""
    from policyengine_us_data.calibration.unified_calibration import main

    blocker = _a_file(tmp_path)
    cases = [(["--db", str(tmp_path)], "--db"), (["--dataset", str(tmp_path)], "--dataset"),
             (["--package-output", str(blocker / "pkg.pkl")], "is a file, not a directory"),
             (["--package-output", str(tmp_path / "missing" / "pkg.pkl")], "mkdir -p"),
             (["--output-dir", str(blocker)], "--output-dir")]
    for argv, words in cases:
        capsys.readouterr()
        out_dir = tmp_path / "out"
        code = main(["--output-dir", str(out_dir), *argv] if "--output-dir" not in argv else argv)
        err = capsys.readouterr().err.strip()
        assert code == 2, (argv, err)
        assert words in err and "Traceback" not in err, err
        assert not out_dir.exists() and not (tmp_path / "missing").exists()


def test_package_output_is_written_where_its_directory_exists_or_inside_the_run_directory(tmp_path, toy_db,
                                                                                         fast_report):
    """The good paths still work: an absolute path in an existing directory, and a relative one inside the run
    directory (whose folders the step may create)."""
    outside = tmp_path / "packages"
    outside.mkdir()
    run_dir = tmp_path / "run"
    assert main_in_process(toy_args(run_dir, toy_db, "--package-output", str(outside / "pkg.pkl"))) == 0
    assert (outside / "pkg.pkl").stat().st_size > 0
    assert main_in_process(toy_args(run_dir, toy_db, "--package-output", "sub/pkg.pkl")) == 0
    assert (run_dir / "sub" / "pkg.pkl").stat().st_size > 0
