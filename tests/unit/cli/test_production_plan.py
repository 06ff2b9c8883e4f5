"""`unified_calibration --plan`: measured inputs only, from a measurement manifest or a build's chunk directory."""

from __future__ import annotations

import json

import pytest

from policyengine_us_data.compat import production_plan as pp
from policyengine_us_data.dispatch.dispatch_estimate import planned_chunks
from policyengine_us_data.calibration import unified_calibration as uc
from policyengine_us_data.dispatch.plan import hms
from policyengine_us_data.shards.chunk_plan import ChunkResult
from policyengine_us_data.shards.lineage import ChunkManifest


def chunk(seconds: float, columns: int = 25_000, peak_mb: float = 4096.0) -> dict:
    return {"chunk_id": 0, "columns": columns, "states": 1, "seconds": seconds, "simulate_s": seconds,
            "nnz": 20 * columns, "peak_rss_mb": peak_mb}


def write_manifest(path, **overrides) -> str:
    manifest = {"format": pp.MANIFEST_FORMAT, "created": "2026-12-02T13:00:00Z", "host": {"load_average_start": [0.3]},
                "sample": {"households": 12_000, "clones": 430}, "policyengine_us": "1.0", "import_s": 40.0,
                "warm_up_s": 60.0, "nnz_per_column": 20.0, "assembly": {"seconds": 1.0, "nnz": 10_000_000},
                "plans": {"contiguous": {"25000": [chunk(320.0, peak_mb=13_000.0)]},
                          "state": {"25000": [chunk(40.0), chunk(50.0), chunk(60.0)], "10000": [chunk(20.0, 10_000)]}}}
    manifest.update(overrides)
    path.write_text(json.dumps(manifest))
    return str(path)


def test_plan_from_a_manifest_compares_both_kinds_at_the_production_shape(tmp_path, capsys):
    measured = write_manifest(tmp_path / "m.json")
    assert uc.main(["--plan", "--measured", measured, "--cold-start-seconds", "20"]) == 0
    out = capsys.readouterr().out
    n_state = planned_chunks(12_000, 430, 0, "state", 25_000)[0]
    assert "12,000 households x 430 clones = 5,160,000 columns in 25,000-column chunks" in out
    contiguous = pp.build_plans(pp.inputs_from_manifest(tmp_path / "m.json", 25_000, 20.0)[0], 12_000, 430, 25_000, 50)
    assert contiguous["contiguous"].shape.n_chunks == 207 and contiguous["state"].shape.n_chunks == n_state
    # start-up 120 s + 5 chunks at 320 s + assembly 1e-7 s x 20 x 5.16 M
    assert contiguous["contiguous"].wall_s == pytest.approx(120 + 5 * 320 + 10.32)
    assert hms(contiguous["contiguous"].wall_s) in out and hms(contiguous["state"].wall_s) in out
    assert "contiguous / state: container-hours" in out and "NOT MEASURED" not in out
    assert "policyengine-us import 40.0 s" in out and "0.100 s per million non-zeros" in out


def test_without_a_cold_start_the_plan_says_so(tmp_path, capsys):
    assert uc.main(["--plan", "--measured", write_manifest(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "cold start NOT MEASURED" in out and "NOT MEASURED: container cold start" in out


def test_an_unmeasured_import_is_named_not_guessed(tmp_path, capsys):
    measured = write_manifest(tmp_path / "m.json", import_s=None, assembly=None)
    assert uc.main(["--plan", "--measured", measured, "--cold-start-seconds", "0"]) == 0
    out = capsys.readouterr().out
    assert "NOT MEASURED: assembly time, policyengine-us import;" in out


@pytest.mark.parametrize("content, message", [
    ("not json", "cannot read the measurement manifest"),
    (json.dumps({"format": "other"}), "is not a measurement manifest"),
    (json.dumps({"format": pp.MANIFEST_FORMAT, "plans": {"state": {"25000": [{"seconds": 1.0}]}}}),
     "malformed measurement manifest"),
])
def test_a_bad_manifest_exits_2(tmp_path, capsys, content, message):
    (tmp_path / "m.json").write_text(content)
    assert uc.main(["--plan", "--measured", str(tmp_path / "m.json")]) == 2
    assert message in capsys.readouterr().err


def test_a_chunk_size_the_manifest_did_not_measure_is_refused(tmp_path, capsys):
    assert uc.main(["--plan", "--measured", write_manifest(tmp_path / "m.json"), "--chunk-size", "8000"]) == 2
    assert "no chunks measured at 8,000 columns (it has 10000, 25000)" in capsys.readouterr().err


def test_plan_from_a_chunk_directory_names_what_it_does_not_record(tmp_path, capsys):
    lineage = {"n_records": 1_000, "n_clones": 50, "chunk_plan": "state", "chunk_size": 25_000}
    manifest = ChunkManifest.create(tmp_path / "chunk_manifest.json", lineage)
    for cid, seconds in enumerate((30.0, 40.0)):
        manifest.record_result(ChunkResult(cid, cid * 25_000, (cid + 1) * 25_000, 500_000, 1, 1, seconds, 6144.0))
    assert uc.main(["--plan", "--chunk-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 chunks of the state plan" in out and "6.0 GB (yes)" in out and "20.0 non-zeros per column" in out
    assert "NOT MEASURED: assembly time, container cold start, first-simulation warm-up, policyengine-us import" in out


def test_a_chunk_directory_at_another_chunk_size_is_refused(tmp_path, capsys):
    lineage = {"n_records": 1_000, "n_clones": 3, "chunk_plan": "state", "chunk_size": 1_000}
    ChunkManifest.create(tmp_path / "chunk_manifest.json", lineage).record_result(
        ChunkResult(0, 0, 1000, 10, 1, 1, 5.0, 0.0))
    assert uc.main(["--plan", "--chunk-dir", str(tmp_path)]) == 2
    assert "built at 1,000 columns, not 25,000: pass --chunk-size 1000" in capsys.readouterr().err


def test_plan_needs_a_source(capsys):
    assert uc.main(["--plan"]) == 2
    assert "--plan needs --measured FILE" in capsys.readouterr().err


def test_planned_chunks_follow_each_kinds_partition():
    assert planned_chunks(12_000, 430, 0, "contiguous", 25_000)[0] == 207
    n_state = planned_chunks(1_000, 430, 0, "state", 2000)[0]
    assert 215 <= n_state <= 215 + 51  # 430,000 columns in chunks of at most 2,000 that do not cross a large state
