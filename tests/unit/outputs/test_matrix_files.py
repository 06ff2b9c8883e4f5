"""Matrix files: each opens with its ordinary reader, holds what was passed, and is written atomically."""

from __future__ import annotations

import csv
import hashlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from policyengine_us_data.datasets.geography import assign_geography
from policyengine_us_data.targets.targets import TargetTable
from policyengine_us_data.errors import InputError
from policyengine_us_data.outputs.matrix_files import (
    PACKAGE_KEYS,
    TARGET_COLUMNS,
    initial_weights,
    write_calibration_package,
    write_matrix_outputs,
)
from policyengine_us_data.utils.atomic import TEMP_PREFIX

META = {"lineage_signature": "abc123", "versions": {"numpy": np.__version__}, "parameters": {"chunk_size": 2}}


@pytest.fixture()
def written(tmp_path, matrix, targets, geography):
    return write_matrix_outputs(tmp_path / "matrix", matrix, targets, geography, META)


def test_paths_and_no_temp_files_left(written, tmp_path) -> None:
    names = {p.name for p in (tmp_path / "matrix").iterdir()}
    assert names == {"X.npz", "targets.csv", "metadata.json", "geography.npz"}
    assert {k: p.name for k, p in written.items()} == {
        "matrix": "X.npz", "targets": "targets.csv", "geography": "geography.npz", "metadata": "metadata.json"}
    assert not any(n.startswith(TEMP_PREFIX) for n in names)


@pytest.mark.parametrize("compressed", [False, True])
def test_matrix_opens_with_load_npz_and_equals_input(tmp_path, matrix, targets, geography, compressed) -> None:
    paths = write_matrix_outputs(tmp_path, matrix, targets, geography, META, compressed=compressed)
    loaded = sp.load_npz(paths["matrix"])
    assert loaded.format == "csr" and loaded.shape == (3, 4)
    assert (loaded != matrix).nnz == 0
    np.testing.assert_array_equal(loaded.toarray(), matrix.toarray())


def test_non_csr_input_is_stored_as_csr(tmp_path, matrix, targets, geography) -> None:
    paths = write_matrix_outputs(tmp_path, matrix.tocoo(), targets, geography, META)
    assert sp.load_npz(paths["matrix"]).format == "csr"


def test_targets_csv_one_line_per_row_in_order(written, targets) -> None:
    with open(written["targets"], newline="", encoding="utf-8") as handle:
        lines = list(csv.reader(handle))
    assert tuple(lines[0]) == TARGET_COLUMNS
    assert len(lines) == 1 + len(targets)
    for r, line in zip(targets.rows, lines[1:]):
        cells = dict(zip(TARGET_COLUMNS, line))
        assert int(cells["row"]) == r.row and int(cells["target_id"]) == r.target_id
        assert cells["name"] == r.name and cells["variable"] == r.variable and cells["geo_level"] == r.geo_level
        assert cells["geographic_id"] == r.geographic_id  # leading zero kept: "06", "0601"
        assert float(cells["value"]) == r.value
        assert int(cells["period"]) == r.period and int(cells["reform_id"]) == r.reform_id


def test_metadata_json(written, targets) -> None:
    meta = json.loads(written["metadata"].read_text())
    assert meta["shape"] == [3, 4] and meta["nnz"] == 5 and meta["density"] == pytest.approx(5 / 12)
    assert meta["lineage_signature"] == "abc123" and meta["parameters"] == {"chunk_size": 2}
    assert meta["versions"]["numpy"] == np.__version__
    assert meta["n_records"] == 2 and meta["n_clones"] == 2
    assert meta["targets_fingerprint"] == targets.fingerprint()
    digest = hashlib.sha256(written["matrix"].read_bytes()).hexdigest()
    assert meta["files"]["X.npz"] == {"sha256": digest, "bytes": written["matrix"].stat().st_size}


def test_geography_round_trip_without_pickle(written, geography) -> None:
    with np.load(written["geography"], allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for name in ("state_fips", "cd_geoid", "county_fips"):
        np.testing.assert_array_equal(arrays[name], getattr(geography, name))
    assert arrays["block_geoid"].dtype == np.dtype("<U15")
    assert arrays["block_geoid"].tolist() == ["060014001001000", "", "", ""]
    assert int(arrays["n_records"]) == 2 and int(arrays["n_clones"]) == 2


def test_geography_with_unknown_blocks_is_plain_unicode(tmp_path) -> None:
    geo = assign_geography(5, 3, seed=2)  # blocks are a zero-stride broadcast view
    table = TargetTable(())
    with pytest.raises(InputError, match="rows"):
        write_matrix_outputs(tmp_path, sp.csr_matrix((2, geo.n_columns)), table, geo, {})
    paths = write_matrix_outputs(tmp_path, sp.csr_matrix((0, geo.n_columns)), table, geo, {})
    with np.load(paths["geography"], allow_pickle=False) as npz:
        blocks, cds = npz["block_geoid"], npz["cd_geoid"]
    assert blocks.shape == (15,) and blocks.dtype.kind == "U" and (blocks == "").all()
    np.testing.assert_array_equal(cds, geo.cd_geoid)


def test_shape_mismatches_are_input_errors(tmp_path, matrix, targets, geography) -> None:
    with pytest.raises(InputError, match="columns"):
        write_matrix_outputs(tmp_path, matrix[:, :3], targets, geography, META)
    with pytest.raises(InputError, match="sparse"):
        write_matrix_outputs(tmp_path, matrix.toarray(), targets, geography, META)
    assert list(tmp_path.iterdir()) == []


def test_calibration_package_keys_and_shapes(tmp_path, matrix, targets, geography, household_data) -> None:
    weights = initial_weights(household_data, 2)
    with pytest.raises(InputError, match="does not exist; create it first"):  # never creates its directory
        write_calibration_package(tmp_path / "pkg" / "calibration_package.pkl", matrix, targets, geography,
                                  {"run": 1}, weights)
    assert not (tmp_path / "pkg").exists()
    (tmp_path / "pkg").mkdir()
    path = write_calibration_package(tmp_path / "pkg" / "calibration_package.pkl", matrix, targets, geography,
                                     {"run": 1}, weights)
    with open(path, "rb") as handle:
        package = pickle.load(handle)  # the test reads what downstream code reads; the project never does
    assert tuple(package) == PACKAGE_KEYS
    assert set(package) == {"X_sparse", "targets_df", "target_names", "metadata", "initial_weights", "cd_geoid",
                            "block_geoid"}
    assert sp.issparse(package["X_sparse"]) and package["X_sparse"].shape == (3, 4)
    assert (package["X_sparse"] != matrix).nnz == 0
    df = package["targets_df"]
    assert len(df) == 3 and list(df["value"]) == [100.0, 50.0, 0.0]
    assert {"variable", "geo_level", "geographic_id", "domain_variable", "value"} <= set(df.columns)
    assert list(df["domain_variable"]) == ["snap", "age", ""]
    assert package["target_names"] == [r.name for r in targets.rows]
    assert package["metadata"] == {"run": 1}
    np.testing.assert_array_equal(package["initial_weights"], [5.0, 15.0, 5.0, 15.0])
    assert package["cd_geoid"].tolist() == ["601", "4801", "602", "3601"]
    assert package["block_geoid"].shape == (4,) and package["block_geoid"][0] == "060014001001000"
    assert not any(p.name.startswith(TEMP_PREFIX) for p in path.parent.iterdir())


def test_calibration_package_rejects_wrong_weight_length(tmp_path, matrix, targets, geography) -> None:
    with pytest.raises(InputError, match="initial_weights"):
        write_calibration_package(tmp_path / "p.pkl", matrix, targets, geography, {}, np.ones(3))
    assert not (tmp_path / "p.pkl").exists()


def test_initial_weights_tiling_and_sum(household_data) -> None:
    w = initial_weights(household_data, 3)
    np.testing.assert_allclose(w, [10 / 3, 10, 10 / 3, 10, 10 / 3, 10])
    assert w.sum() == pytest.approx(40.0)
    # column c = clone * n_records + record
    assert all(w[clone * 2 + record] == [10 / 3, 10][record] for clone in range(3) for record in range(2))
    with pytest.raises(InputError):
        initial_weights(household_data, 0)


def test_modules_import_without_pandas_or_matplotlib() -> None:
    code = ("import sys, policyengine_us_data.outputs.matrix_files, policyengine_us_data.outputs.report; "
            "bad = [m for m in ('pandas', 'matplotlib', 'policyengine_us') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[3])
