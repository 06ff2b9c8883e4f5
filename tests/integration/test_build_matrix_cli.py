"""`bin/build-matrix` end to end with the real policyengine-us (issue 6's tests).

One small build (40 households x 2 clones, chunks of 40 columns, the embedded target database)
is shared by the module; each test then drives the runner the way a person would.
"""

from __future__ import annotations

import argparse
import csv
import json
import pickle

import numpy as np
import pytest
import scipy.sparse as sp

from commands import build_matrix_runner
from commands.cli import main as cli_main
from policyengine_us_data.pipeline.default_targets import default_targets_path
from policyengine_us_data.datasets.geography import CloneGeography
from policyengine_us_data.calibration import unified_calibration
from policyengine_us_data.calibration.unified_matrix_builder import UnifiedMatrixBuilder

SMALL = ["--households", "40", "--n-clones", "2", "--chunk-size", "40", "--workers", "1", "--seed", "4"]


def load_matrix(run_dir):
    return sp.load_npz(run_dir / "matrix" / "X.npz")


def assert_same(a, b) -> None:
    assert a.shape == b.shape
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data, b.data)


def journal_labels_since(run_dir, count: int) -> list[str]:
    records = json.loads((run_dir / ".runner" / "journal.json").read_text())
    records = records["records"] if isinstance(records, dict) else records
    return [r["label"] for r in records[count:] if r.get("status") == "done"]


def journal_length(run_dir) -> int:
    records = json.loads((run_dir / ".runner" / "journal.json").read_text())
    return len(records["records"] if isinstance(records, dict) else records)


@pytest.fixture(scope="module")
def built(tmp_path_factory, pe_simulator):
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    assert cli_main(["--run-dir", str(run_dir), "--to", "assemble", *SMALL]) == 0
    return run_dir


def test_outputs_exist_and_describe_the_matrix(built):
    matrix = load_matrix(built)
    lines = list(csv.reader((built / "matrix" / "targets.csv").open()))
    assert lines[0][:3] == ["row", "target_id", "name"]
    assert len(lines) - 1 == matrix.shape[0] and matrix.shape[1] == 80
    meta = json.loads((built / "matrix" / "metadata.json").read_text())
    assert meta["nnz"] == matrix.nnz and meta["lineage_signature"]
    report = json.loads((built / "report.json").read_text())
    assert report and (built / "report.md").read_text().startswith("#")
    assert (built / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [int(line[0]) for line in lines[1:]] == list(range(matrix.shape[0]))
    levels = {line[4] for line in lines[1:]}
    assert levels == {"national", "state", "district"}


def test_matrix_equals_the_non_chunked_builder(built):
    builder = UnifiedMatrixBuilder(default_targets_path(), 2024, built / "dataset" / "dataset.h5",
                                   work_dir=built.parent / "direct")
    geography = CloneGeography.load(built / "dataset" / "geography.npz")
    _, reference, names = builder.build_matrix(geography)
    assert_same(load_matrix(built), reference)
    rows = list(csv.reader((built / "matrix" / "targets.csv").open()))[1:]
    assert names == [row[2] for row in rows]
    assert [float(row[6]) for row in rows] == [r.value for r in builder.targets.rows]  # uprated the same way


def test_the_upstream_front_ends_give_bin_build_matrixs_matrix_and_targets(built, tmp_path):
    """One pipeline: `unified_calibration --chunked-matrix` and `UnifiedMatrixBuilder.build_matrix_chunked` on the
    same dataset, geography and database give the same matrix arrays and byte for byte the same targets.csv (values
    uprated the same way) as `bin/build-matrix`; both CLIs write the same metadata keys and package keys."""
    dataset = built / "dataset" / "dataset.h5"
    out = tmp_path / "uc"
    assert unified_calibration.main(["--chunked-matrix", "--dataset", str(dataset), "--n-clones", "2", "--seed", "4",
                                     "--chunk-size", "40", "--output-dir", str(out),
                                     "--package-output", "package.pkl"]) == 0
    assert_same(sp.load_npz(out / "X.npz"), load_matrix(built))
    assert (out / "targets.csv").read_bytes() == (built / "matrix" / "targets.csv").read_bytes()
    ours = json.loads((built / "matrix" / "metadata.json").read_text())
    theirs = json.loads((out / "metadata.json").read_text())
    assert set(ours) == set(theirs) and ours["lineage_signature"] == theirs["lineage_signature"]
    with open(out / "package.pkl", "rb") as handle:  # a relative --package-output lies in --output-dir
        package = pickle.load(handle)  # our own file, just written
    assert set(package["metadata"]) == set(ours) - {"shape", "nnz", "density", "format", "targets_fingerprint",
                                                    "files"}

    builder = UnifiedMatrixBuilder(default_targets_path(), 2024, dataset, work_dir=tmp_path / "api")
    frame, matrix, names = builder.build_matrix_chunked(CloneGeography.load(built / "dataset" / "geography.npz"),
                                                        chunk_size=40, chunk_plan="state")
    assert_same(matrix, load_matrix(built))
    rows = list(csv.reader((built / "matrix" / "targets.csv").open()))[1:]
    assert names == [row[2] for row in rows] and [repr(float(v)) for v in frame["value"]] == [row[6] for row in rows]


def test_reset_to_dispatch_reruns_only_verify_and_assemble(built):
    before = load_matrix(built)
    count = journal_length(built)
    assert cli_main(["--run-dir", str(built), "--reset-to", "dispatch", "--to", "assemble"]) == 0
    assert journal_labels_since(built, count) == ["verify", "assemble"]
    assert_same(load_matrix(built), before)


def test_changed_chunk_size_makes_dispatch_stale_and_gives_the_same_matrix(built, capsys):
    before = load_matrix(built)
    capsys.readouterr()
    assert cli_main(["--run-dir", str(built), "--dry-run", "--chunk-size", "30"]) == 0
    out = capsys.readouterr().out
    assert "dispatch: chunk_size changed: 40 -> 30" in out and "verify: an earlier step will re-run" in out
    assert cli_main(["--run-dir", str(built), "--to", "assemble", "--chunk-size", "30"]) == 0
    assert_same(load_matrix(built), before)


def test_status_and_script_use(built, capsys):
    capsys.readouterr()
    assert cli_main(["--run-dir", str(built), "--status"]) == 0
    status = capsys.readouterr().out
    for label in ("dataset", "constraints", "dispatch", "verify", "assemble"):
        assert label in status
    assert "done" in status
    result = build_matrix_runner(built).run(argparse.Namespace(to="assemble"))
    assert result.ok and result.ran == ()  # everything up to date, flags remembered


def test_dry_run_json_counts_the_chunks_and_estimates_from_the_real_build(built, capsys):
    capsys.readouterr()
    assert cli_main(["--run-dir", str(built), "--dry-run", "--json", "--to", "assemble", "--chunk-size", "20"]) == 0
    report = json.loads(capsys.readouterr().out)
    details = {s["label"]: s for s in report["run"]}["dispatch"]["details"]
    summary = json.loads((built / "chunks" / "dispatch.json").read_text())
    assert details["columns"] == summary["n_columns"] == 80 and details["chunks"] >= summary["chunks"]
    assert details["estimate_s"] > 0 and summary["warm_up_seconds"] > 0  # the real warm-up was measured
