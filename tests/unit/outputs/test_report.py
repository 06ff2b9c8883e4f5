"""Run report: numbers checked by hand on a 3 x 4 matrix, readable markdown, a real PNG, and the edge cases."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp

from policyengine_us_data.targets.targets import TargetTable
from policyengine_us_data.errors import InputError
from policyengine_us_data.outputs.matrix_files import initial_weights
from policyengine_us_data.outputs.report import build_report, normalise_chunks, write_verify_report
from policyengine_us_data.utils.atomic import TEMP_PREFIX

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
VERIFY = {"chunks_checked": 3, "deep": True, "damaged": []}


@pytest.fixture()
def report(tmp_path, matrix, targets, household_data, chunk_results):
    weights = initial_weights(household_data, 2)  # [5, 15, 5, 15]
    return build_report(tmp_path, matrix=matrix, targets=targets, weights=weights, chunk_results=chunk_results,
                        verify_summary=VERIFY, metadata={"lineage_signature": "abc", "parameters": {"seed": 3}})


def test_files_written_atomically(report, tmp_path) -> None:
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"report.json", "report.md", "report.png"}
    assert (tmp_path / "report.png").read_bytes()[:8] == PNG_MAGIC
    assert json.loads((tmp_path / "report.json").read_text()) == json.loads(json.dumps(report))


def test_matrix_numbers(report) -> None:
    m = report["matrix"]
    assert m["shape"] == [3, 4] and m["nnz"] == 5 and m["density"] == pytest.approx(5 / 12)
    assert m["rows_per_geo_level"] == {"national": 1, "state": 1, "district": 1}
    assert list(m["rows_per_geo_level"]) == ["national", "state", "district"]
    assert m["rows_per_variable"] == {"eitc": 1, "person_count": 1, "snap": 1}
    assert m["empty_rows"] == 0


def test_relative_errors_by_hand(report) -> None:
    # estimates: row 0 = 1*5 + 2*15 + 1*15 = 50 (target 100 -> -0.5); row 1 = 15 (target 50 -> -0.7);
    # row 2 = 15 with target 0 -> n/a
    fit = report["fit"]
    assert fit["weights"] == {"n": 4, "sum": pytest.approx(40.0)}
    national, state, district = (fit["by_geo_level"][g] for g in ("national", "state", "district"))
    assert national == {"rows": 1, "with_error": 1, "zero_targets": 0, "median_abs_rel_error": pytest.approx(0.5),
                        "p90_abs_rel_error": pytest.approx(0.5)}
    assert state["median_abs_rel_error"] == pytest.approx(0.7)
    assert district == {"rows": 1, "with_error": 0, "zero_targets": 1, "median_abs_rel_error": None,
                        "p90_abs_rel_error": None}
    overall = fit["overall"]
    assert overall["median_abs_rel_error"] == pytest.approx(0.6)
    assert overall["p90_abs_rel_error"] == pytest.approx(0.5 + 0.9 * 0.2)
    worst = fit["worst_rows"]
    assert [w["row"] for w in worst] == [1, 0]  # the zero-target row is never ranked
    assert worst[0]["estimate"] == pytest.approx(15.0) and worst[0]["rel_error"] == pytest.approx(-0.7)
    assert worst[1]["name"] == "national/US/snap/[snap>0]" and worst[1]["rel_error"] == pytest.approx(-0.5)


def test_chunk_numbers(report) -> None:
    c = report["chunks"]
    assert c["n_chunks"] == 3 and c["n_workers"] == 2 and c["timeline_exact"]
    assert c["wall_seconds"] == pytest.approx(7.0) and c["compute_seconds"] == pytest.approx(12.0)
    assert c["slowest_chunk"] == {"chunk_id": 1, "seconds": 6.0, "worker": "w2"}
    assert c["peak_rss_mb"] == 500.0 and c["median_chunk_seconds"] == 4.0
    assert c["stage_seconds"] == {"simulate": 8.0, "write": 1.0}
    assert [(w["worker"], w["chunks"], w["busy_seconds"]) for w in c["workers"]] == [("w1", 2, 6.0), ("w2", 1, 6.0)]
    starts = {ch["chunk_id"]: (ch["start"], ch["end"]) for ch in c["chunks"]}
    assert starts == {0: (0.0, 4.0), 1: (1.0, 7.0), 2: (4.5, 6.5)}


def test_markdown_reads_well(report, tmp_path) -> None:
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("# Calibration matrix report")
    assert "![" in md and "](report.png)" in md
    assert "| Geo level | Rows | With rel. error | Median abs. rel. error | 90th pct abs. rel. error |" in md
    assert "| national | 1 | 1 | 50.0% | 50.0% |" in md
    assert "| state | 1 | 1 | 70.0% | 70.0% |" in md
    assert "| district | 1 | 0 | n/a | n/a |" in md
    assert "`state/06/person_count/[age>=18,age<65]`" in md and "-70.0%" in md
    assert "3 chunk(s) checked (deep" in md and "none damaged" in md
    assert "`lineage_signature`" in md
    assert "nan" not in md.lower().replace("n/a", "")


def test_empty_chunk_list_means_resumed(tmp_path, matrix, targets) -> None:
    report = build_report(tmp_path, matrix=matrix, targets=targets, weights=np.ones(4), chunk_results=[],
                          verify_summary=None, metadata={})
    assert report["chunks"]["n_chunks"] == 0 and report["verify"] is None
    md = (tmp_path / "report.md").read_text()
    assert "already done" in md and "## Verification" not in md
    assert (tmp_path / "report.png").read_bytes()[:8] == PNG_MAGIC


def test_all_zero_targets_and_empty_rows(tmp_path, targets) -> None:
    zero = TargetTable(tuple(replace(r, value=0.0) for r in targets.rows))
    matrix = sp.csr_matrix(np.array([[1.0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 2.0]]))
    report = build_report(tmp_path, matrix=matrix, targets=zero, weights=np.ones(4), chunk_results=[],
                          verify_summary=None, metadata={})
    assert report["fit"]["overall"]["with_error"] == 0 and report["fit"]["worst_rows"] == []
    assert report["fit"]["overall"]["median_abs_rel_error"] is None
    assert report["matrix"]["empty_rows"] == 1 and report["matrix"]["empty_row_names"] == [zero.rows[1].name]
    md = (tmp_path / "report.md").read_text()
    assert "no non-zero entry" in md and "3 row(s) have a zero target" in md
    json.loads((tmp_path / "report.json").read_text())  # strict JSON: no NaN


def test_results_without_times_give_an_approximate_timeline(chunk_results) -> None:
    untimed = [replace(r, started=0.0, finished=0.0, peak_rss_mb=0.0) for r in chunk_results[:2]]
    chunks, exact = normalise_chunks([untimed[0], replace(untimed[1], worker="w1", attempts=2)])
    assert not exact and [(c["start"], c["end"]) for c in chunks] == [(0.0, 4.0), (4.0, 10.0)]
    assert chunks[0]["peak_rss_mb"] is None and chunks[1]["attempts"] == 2
    timed, exact = normalise_chunks(chunk_results)
    assert exact and [c["chunk_id"] for c in timed] == [0, 1, 2]


def test_chunks_reused_after_a_resume_are_in_the_timeline_marked_as_reused(tmp_path, matrix, targets,
                                                                           chunk_results) -> None:
    """Issue 16: after a resume the reused chunks stayed out of the timeline. They are listed (at the times they
    were computed), marked, counted apart, and kept out of this invocation's wall time and per-worker load."""
    earlier = [replace(r, reused=True, started=r.started - 100.0, finished=r.finished - 100.0)
               for r in chunk_results[:2]]
    results = earlier + chunk_results[2:]
    report = build_report(tmp_path, matrix=matrix, targets=targets, weights=np.ones(matrix.shape[1]),
                          chunk_results=results, verify_summary=None, metadata={})
    chunks = report["chunks"]
    assert [(c["chunk_id"], c["reused"]) for c in chunks["chunks"]] == [(0, True), (1, True), (2, False)]
    assert chunks["n_chunks"] == 1 and chunks["reused_chunks"] == 2
    assert chunks["wall_seconds"] == pytest.approx(chunk_results[2].seconds)
    assert [w["chunks"] for w in chunks["workers"]] == [1]
    assert "2 chunk(s) were reused from an earlier run" in (tmp_path / "report.md").read_text()
    only_reused = build_report(tmp_path / "all", matrix=matrix, targets=targets, weights=np.ones(matrix.shape[1]),
                               chunk_results=earlier + [replace(chunk_results[2], reused=True)], metadata={})
    assert only_reused["chunks"]["n_chunks"] == 0 and len(only_reused["chunks"]["chunks"]) == 3


def test_wrong_weight_length_is_an_input_error(tmp_path, matrix, targets) -> None:
    with pytest.raises(InputError, match="weights"):
        build_report(tmp_path, matrix=matrix, targets=targets, weights=np.ones(3), chunk_results=[],
                     verify_summary=None, metadata={})


def test_verify_report(tmp_path) -> None:
    summary = {"chunks_checked": 4, "deep": False, "lineage_signature": "abc",
               "damaged": [{"chunk_id": 2, "path": "chunks/chunk_000002.npz", "defect": "checksum mismatch"}]}
    paths = write_verify_report(tmp_path / "verify.json", summary)
    assert paths == {"json": tmp_path / "verify.json", "markdown": tmp_path / "verify.md"}
    saved = json.loads(paths["json"].read_text())
    assert saved["chunks_checked"] == 4 and saved["lineage_signature"] == "abc"
    assert saved["damaged"] == summary["damaged"]
    md = paths["markdown"].read_text()
    assert "Checked 4 chunk(s), shallow" in md and "| 2 | `chunks/chunk_000002.npz` | checksum mismatch |" in md
    clean = write_verify_report(tmp_path / "ok.json", {"chunks_checked": 4, "deep": True, "damaged": []})
    assert "All shards are present" in clean["markdown"].read_text()
    assert not any(p.name.startswith(TEMP_PREFIX) for p in tmp_path.iterdir())
