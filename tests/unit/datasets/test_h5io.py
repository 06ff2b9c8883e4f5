"""Round trips and every validation error of the PolicyEngine h5 reader/writer."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policyengine_us_data.datasets.h5io import read_dataset, validate_arrays, write_dataset
from policyengine_us_data.datasets.household_data import HouseholdData
from policyengine_us_data.datasets.synthetic import generate_synthetic
from policyengine_us_data.errors import DatasetError, InputError


def _tiny() -> dict[str, np.ndarray]:
    arrays = {"person_id": np.array([10, 11, 12]), "age": np.array([40.0, 38.0, 5.0])}
    for entity, ids, links in (("household", [0, 1], [0, 0, 1]), ("tax_unit", [5, 6], [5, 5, 6]),
                               ("spm_unit", [0, 1], [0, 0, 1]), ("family", [0, 1], [0, 0, 1]),
                               ("marital_unit", [0, 1, 2], [0, 1, 2])):
        arrays[f"{entity}_id"] = np.array(ids)
        arrays[f"person_{entity}_id"] = np.array(links)
    return arrays


def test_round_trip_synthetic(tmp_path, synthetic_small):
    path = write_dataset(tmp_path / "d.h5", synthetic_small)
    back = read_dataset(path)
    assert back.period == synthetic_small.period
    assert set(back.arrays) == set(synthetic_small.arrays)  # h5py lists groups alphabetically
    for name, array in synthetic_small.arrays.items():
        assert back.arrays[name].dtype == array.dtype, name
        np.testing.assert_array_equal(back.arrays[name], array)
    with h5py.File(path, "r") as handle:
        assert isinstance(handle["age"], h5py.Group) and "2024" in handle["age"]


def test_round_trip_strings(tmp_path):
    arrays = _tiny()
    arrays["county_fips"] = np.array(["06037", "36061"])
    arrays["state_name"] = np.array(["Calif\u00f6rnia", "NY"], dtype=object)
    write_dataset(tmp_path / "s.h5", HouseholdData(arrays, 2025, {"state_name": "household"}))
    with h5py.File(tmp_path / "s.h5", "r") as handle:
        assert handle["county_fips"]["2025"].dtype.kind == "S"
        assert handle["state_name"].attrs["entity"] == "household"
    back = read_dataset(tmp_path / "s.h5")
    assert back.period == 2025
    assert back.arrays["county_fips"].dtype.kind == "U"
    assert back.arrays["county_fips"].tolist() == ["06037", "36061"]
    assert back.arrays["state_name"].tolist() == ["Calif\u00f6rnia", "NY"]


def test_write_is_atomic_and_leaves_no_temp(tmp_path):
    path = tmp_path / "d.h5"
    path.write_bytes(b"old")
    bad = _tiny()
    del bad["person_id"]
    with pytest.raises(DatasetError):
        write_dataset(path, HouseholdData(bad, 2024))
    assert path.read_bytes() == b"old"
    write_dataset(path, HouseholdData(_tiny(), 2024))
    assert [p.name for p in tmp_path.iterdir()] == ["d.h5"]


def test_period_selection(tmp_path):
    path = tmp_path / "p.h5"
    write_dataset(path, HouseholdData(_tiny(), 2023))
    with h5py.File(path, "a") as handle:
        for name in list(handle):
            handle[name].create_dataset("2024", data=handle[name]["2023"][()])
        handle["age"]["2024"][...] = [1.0, 2.0, 3.0]
    assert read_dataset(path).period == 2024
    assert read_dataset(path).arrays["age"].tolist() == [1.0, 2.0, 3.0]
    assert read_dataset(path, period=2023).arrays["age"].tolist() == [40.0, 38.0, 5.0]
    with pytest.raises(DatasetError, match="requested period 2030 is absent.*2023, 2024"):
        read_dataset(path, period=2030)


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="not found") as info:
        read_dataset(tmp_path / "nope.h5")
    assert "nope.h5" in str(info.value)
    assert isinstance(info.value, InputError) and isinstance(info.value, ValueError)


def test_not_hdf5(tmp_path):
    (tmp_path / "x.h5").write_text("hello, not hdf5")
    with pytest.raises(DatasetError, match="x.h5: not an HDF5 file"):
        read_dataset(tmp_path / "x.h5")


def test_no_period(tmp_path):
    with h5py.File(tmp_path / "e.h5", "w") as handle:
        handle.create_group("person_id")
    with pytest.raises(DatasetError, match="no period found"):
        read_dataset(tmp_path / "e.h5")


@pytest.mark.parametrize("missing", ["person_id", "household_id", "person_tax_unit_id", "marital_unit_id"])
def test_missing_required(tmp_path, missing):
    arrays = _tiny()
    del arrays[missing]
    with h5py.File(tmp_path / "m.h5", "w") as handle:
        for name, array in arrays.items():
            handle.create_group(name).create_dataset("2024", data=array)
    with pytest.raises(DatasetError, match=f"'{missing}' is missing") as info:
        read_dataset(tmp_path / "m.h5")
    assert "m.h5" in str(info.value)


def _expect(arrays, pattern):
    with pytest.raises(DatasetError, match=pattern) as info:
        validate_arrays(arrays, "somefile.h5")
    assert str(info.value).startswith("somefile.h5: ")
    return str(info.value)


def test_length_mismatch_names_variable_and_lengths():
    arrays = _tiny()
    arrays["age"] = np.array([1.0, 2.0])
    message = _expect(arrays, "'age' has length 2 but person-level variables need length 3")
    arrays = _tiny()
    arrays["person_tax_unit_id"] = np.array([5, 6])
    _expect(arrays, "'person_tax_unit_id' has length 2 but person-level variables need length 3")
    arrays = _tiny()
    arrays["mystery"] = np.arange(7)
    _expect(arrays, "'mystery' has length 7, which matches no entity count")
    assert "Fix or drop" in message


def test_link_to_missing_id():
    arrays = _tiny()
    arrays["person_spm_unit_id"] = np.array([0, 0, 9])
    _expect(arrays, "link 'person_spm_unit_id' points at ids that do not exist.*e.g. id 9")


def test_duplicate_ids():
    arrays = _tiny()
    arrays["person_id"] = np.array([10, 10, 12])
    _expect(arrays, "duplicate ids in 'person_id'.*10")
    arrays = _tiny()
    arrays["tax_unit_id"] = np.array([5, 5])
    _expect(arrays, "duplicate ids in 'tax_unit_id'")


def test_empty_entity_and_split_entity():
    arrays = _tiny()
    arrays["marital_unit_id"] = np.array([0, 1, 2, 3])
    _expect(arrays, "marital_unit id 3 .* has no members")
    arrays = _tiny()
    arrays["person_tax_unit_id"] = np.array([5, 6, 6])
    _expect(arrays, "tax_unit id 6 has members in more than one household")


def test_multidimensional_rejected():
    arrays = _tiny()
    arrays["age"] = np.zeros((3, 2))
    _expect(arrays, "'age' has shape \\(3, 2\\)")


@pytest.fixture(scope="module")
def valid_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("valid") / "v.h5"
    write_dataset(path, generate_synthetic(20, seed=1))
    return path.read_bytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=4096))
def test_random_bytes_give_dataset_error(tmp_path, blob):
    path = tmp_path / "random.h5"
    path.write_bytes(blob)
    with pytest.raises(DatasetError):
        read_dataset(path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fraction=st.floats(0.0, 0.999), flip=st.integers(0, 2**31))
def test_truncated_or_corrupted_file_gives_dataset_error(tmp_path, valid_bytes, fraction, flip):
    cut = valid_bytes[: int(len(valid_bytes) * fraction)]
    path = tmp_path / "cut.h5"
    path.write_bytes(cut)
    with pytest.raises(DatasetError):
        read_dataset(path)
    corrupted = bytearray(valid_bytes)
    for k in range(8):
        corrupted[(flip + k * 7919) % len(corrupted)] ^= 0xFF
    path.write_bytes(bytes(corrupted))
    try:
        read_dataset(path)
    except DatasetError:
        pass
