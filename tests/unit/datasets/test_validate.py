"""The streamed dataset validator (datasets/validate.py): what it refuses, how it names it, and what it accepts."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from policyengine_us_data.datasets import validate
from policyengine_us_data.datasets.h5io import check_dataset, read_dataset, write_dataset
from policyengine_us_data.datasets.synthetic import generate_synthetic
from policyengine_us_data.errors import DatasetError


def _arrays() -> tuple[dict[str, np.ndarray], int]:
    data = generate_synthetic(12, seed=3)
    return {k: np.asarray(v).copy() for k, v in data.arrays.items()}, data.period


def _write(path: Path, arrays: dict[str, np.ndarray], period: int, **special: dict) -> Path:
    with h5py.File(path, "w") as handle:
        for name, array in arrays.items():
            if array.dtype.kind == "U":
                array = array.astype("S")
            handle.create_group(name).create_dataset(str(period), data=array, **special.get(name, {}))
    return path


def _message(path: Path) -> str:
    with pytest.raises(DatasetError) as caught:
        check_dataset(path)
    return str(caught.value)


def test_a_valid_dataset_passes_and_reads_back(tmp_path):
    data = generate_synthetic(30, seed=2)
    path = write_dataset(tmp_path / "ok.h5", data)
    assert check_dataset(path) == data.period
    assert read_dataset(path).n_households == 30


def test_values_are_read_in_slices_and_positions_are_global(tmp_path, monkeypatch):
    """With 4-value slices, a NaN in the third slice is still named at its position in the whole array."""
    monkeypatch.setattr(validate, "SLICE_ROWS", 4)
    arrays, period = _arrays()
    arrays["household_weight"][9] = np.nan
    arrays["household_weight"][10] = np.inf
    message = _message(_write(tmp_path / "bad.h5", arrays, period))
    assert "household_weight: 2 NaN or infinite value(s) at households 9, 10" in message


def test_many_bad_values_show_the_first_positions_and_the_count(tmp_path):
    arrays, period = _arrays()
    arrays["state_fips"][:] = 72  # Puerto Rico: not one of the 50 states or DC
    message = _message(_write(tmp_path / "pr.h5", arrays, period))
    assert "state_fips: 12 value(s) that are not a state FIPS code of the 50 states or DC at households 0, 1, 2, ..." \
        in message


def test_state_fips_as_text_digits_is_checked_too(tmp_path):
    arrays, period = _arrays()
    arrays["state_fips"] = np.array([f"{v:02d}" for v in arrays["state_fips"]])
    arrays["state_fips"][1] = "99"
    message = _message(_write(tmp_path / "text.h5", arrays, period))
    assert "state_fips: 1 value(s)" in message and "at household 1" in message


def test_a_dtype_policyengine_cannot_read_and_a_two_dimensional_variable(tmp_path):
    arrays, period = _arrays()
    arrays["rent"] = arrays["household_weight"].astype(np.complex128)
    arrays["age"] = np.stack([arrays["age"], arrays["age"]], axis=1)
    message = _message(_write(tmp_path / "dtype.h5", arrays, period))
    assert "rent: dtype complex128 is not one PolicyEngine reads" in message
    assert "age: shape" in message and "one-dimensional" in message


def test_an_entity_count_beyond_the_limit_is_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(validate, "MAX_ROWS", 20)
    arrays, period = _arrays()
    message = _message(_write(tmp_path / "many.h5", arrays, period))
    assert "person_id: declares" in message and "more than the 20" in message


def test_ids_must_be_integers(tmp_path):
    arrays, period = _arrays()
    arrays["tax_unit_id"] = arrays["tax_unit_id"].astype("S")
    message = _message(_write(tmp_path / "text_ids.h5", arrays, period))
    assert "tax_unit_id: dtype" in message and "ids must be integers" in message


def test_every_missing_required_variable_is_named(tmp_path):
    arrays, period = _arrays()
    del arrays["spm_unit_id"], arrays["person_family_id"]
    message = _message(_write(tmp_path / "missing.h5", arrays, period))
    assert "'spm_unit_id' is missing" in message and "'person_family_id' is missing" in message
    assert "2 problem(s)" in message


def test_compressed_chunked_datasets_are_validated_the_same(tmp_path):
    arrays, period = _arrays()
    arrays["household_weight"][4] = -1.0
    path = _write(tmp_path / "gz.h5", arrays, period,
                  household_weight={"chunks": (5,), "compression": "gzip"})
    assert "household_weight: 1 negative weight(s) at household 4" in _message(path)
