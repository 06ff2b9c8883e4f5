"""Bad values with the real policyengine-us (issue 13; the toy-simulator cases are tests/reliability/test_bad_values.py).

- a real build (`bin/build-matrix` and `unified_calibration`) on an h5 with a NaN household weight exits 2 naming
  the variable and household, and builds nothing;
- constraint values are checked against policyengine-us's own variable types (numeric, boolean, enum with its
  possible values), and the embedded default database passes that check.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from policyengine_us_data.pipeline.default_targets import DEFAULT_TARGETS_DB
from policyengine_us_data.targets.target_checks import variable_types_of
from policyengine_us_data.targets.targets import load_targets
from policyengine_us_data.errors import TargetError
from tests.reliability.conftest import main_in_process, tree_state
from tests.reliability.test_bad_input import _valid_arrays, _write_h5
from tests.support.target_db import make_target_db

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture
def nan_weight_h5(tmp_path: Path) -> Path:
    arrays, period = _valid_arrays()
    arrays["household_weight"] = arrays["household_weight"].astype(np.float64)
    arrays["household_weight"][3] = np.nan
    return _write_h5(tmp_path / "nan_weight.h5", arrays, period)


def test_a_real_build_with_a_nan_weight_exits_2_and_builds_nothing(nan_weight_h5, tmp_path, capsys):
    run_dir = tmp_path / "run"
    capsys.readouterr()
    code = main_in_process(["--run-dir", str(run_dir), "--to", "assemble", "--dataset", str(nan_weight_h5),
                            "--n-clones", "2", "--chunk-size", "20"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "household_weight: 1 NaN at household 3" in err and "Fix the file" in err
    built = [p for p in tree_state(run_dir) if p != "." and not p.startswith(".runner")]
    assert built == [], f"bad input built {built}"


def test_unified_calibration_with_a_nan_weight_exits_2(nan_weight_h5, tmp_path, capsys):
    from policyengine_us_data.calibration.unified_calibration import main

    out = tmp_path / "out"
    capsys.readouterr()
    code = main(["--chunked-matrix", "--dataset", str(nan_weight_h5), "--output-dir", str(out), "--n-clones", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "household_weight: 1 NaN at household 3" in err, err
    assert not (out / "X.npz").exists() and not (out / "work").exists()


def test_constraint_values_are_checked_against_policyengine_us_types(tmp_path, pe_system):
    db = make_target_db(tmp_path / "typed.db", [
        ("person_count", [("age", "==", "1; DROP TABLE targets")], 1e6, 0),
        ("person_count", [("medicaid_enrolled", "==", "7")], 1e6, 0),
        ("tax_unit_count", [("filing_status", "==", "MARRIED")], 1e6, 0),
        ("tax_unit_count", [("filing_status", "==", "JOINT")], 1e6, 0),
    ])
    with pytest.raises(TargetError) as caught:
        load_targets(db, 2024, known_variables=set(pe_system.variables), variable_type=variable_types_of(pe_system))
    message = str(caught.value)
    assert "3 problems" in message, message
    assert "age == '1; DROP TABLE targets': the variable is numeric" in message
    assert "medicaid_enrolled == 7: the variable is boolean" in message
    assert "filing_status == 'MARRIED': the variable is an enum; give one of" in message and "JOINT" in message


def test_the_embedded_default_database_passes_the_type_check(pe_system):
    table = load_targets(DEFAULT_TARGETS_DB, 2024, known_variables=set(pe_system.variables),
                         variable_type=variable_types_of(pe_system))
    assert len(table) > 3000
