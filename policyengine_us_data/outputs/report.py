"""The run report: what was built, how the chunks ran, and how far uncalibrated weights are from the targets.

`build_report` writes `report.json` (every number, for scripts), `report.md` (for a person or a
GitHub job summary) and `report.png` (chunk timeline per worker, chunk durations and peak RSS,
relative error by geo level), each atomically. `write_verify_report` records what `verify` checked.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import scipy.sparse as sp

from policyengine_us_data.shards.chunk_plan import ChunkResult
from policyengine_us_data.targets.targets import TargetTable
from policyengine_us_data.errors import InputError
from policyengine_us_data.geo_levels import ordered_levels
from policyengine_us_data.outputs.matrix_files import matrix_stats
from policyengine_us_data.utils.atomic import atomic_write_json, atomic_write_text

__all__ = ["REPORT_JSON", "REPORT_MD", "REPORT_PNG", "build_report", "write_verify_report", "normalise_chunks",
           "chunk_summary", "fit_summary", "matrix_summary"]

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_PNG = "report.png"
REPORT_FORMAT = "run_report/1"
WORST_ROWS = 10


def _quantile(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def matrix_summary(matrix: sp.spmatrix, targets: TargetTable) -> dict[str, Any]:
    """Shape, nnz, density, rows per geo level and per variable, and rows no column reaches."""
    csr = matrix.tocsr()
    per_row_nnz = np.diff(csr.indptr)
    by_level: dict[str, int] = {}
    by_variable: dict[str, dict[str, int]] = {}
    for r in targets.rows:
        by_level[r.geo_level] = by_level.get(r.geo_level, 0) + 1
        counts = by_variable.setdefault(r.variable, {})
        counts[r.geo_level] = counts.get(r.geo_level, 0) + 1
    empty = np.flatnonzero(per_row_nnz == 0)
    return {
        **matrix_stats(csr),
        "rows_per_geo_level": {g: by_level[g] for g in ordered_levels(by_level)},
        "rows_per_variable": {v: sum(c.values()) for v, c in sorted(by_variable.items())},
        "rows_per_variable_and_geo_level": {v: by_variable[v] for v in sorted(by_variable)},
        "empty_rows": int(len(empty)),
        "empty_row_names": [targets.rows[i].name for i in empty[:WORST_ROWS]],
    }


def _error_stats(abs_err: np.ndarray, n_rows: int) -> dict[str, Any]:
    return {"rows": int(n_rows), "with_error": int(len(abs_err)), "zero_targets": int(n_rows - len(abs_err)),
            "median_abs_rel_error": _quantile(abs_err, 50), "p90_abs_rel_error": _quantile(abs_err, 90)}


def fit_summary(matrix: sp.spmatrix, targets: TargetTable, weights: np.ndarray) -> dict[str, Any]:
    """Estimate = matrix @ weights; relative error = (estimate - target) / target, n/a where the target is 0.

    Also returns `abs_rel_errors_by_geo_level` (numpy arrays, for the figure; build_report drops them from JSON).
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (matrix.shape[1],):
        raise InputError(f"weights has shape {w.shape} but the matrix has {matrix.shape[1]} columns: "
                         "pass one uncalibrated weight per column (outputs.matrix_files.initial_weights).")
    estimate = np.asarray(matrix @ w, dtype=np.float64).reshape(-1)
    target = np.array([r.value for r in targets.rows], dtype=np.float64)
    defined = (target != 0) & np.isfinite(target)
    rel = np.full(len(target), np.nan)
    rel[defined] = (estimate[defined] - target[defined]) / target[defined]
    levels = np.array([r.geo_level for r in targets.rows], dtype=object)
    by_level = {}
    for level in ordered_levels(levels.tolist()):
        mask = levels == level
        by_level[level] = _error_stats(np.abs(rel[mask & defined]), int(mask.sum()))
    order = np.argsort(-np.abs(np.where(defined, rel, 0.0)), kind="stable")
    worst = [_row_error(targets, int(i), estimate, rel) for i in order[:WORST_ROWS] if defined[i]]
    return {
        "weights": {"n": int(len(w)), "sum": float(w.sum())},
        "overall": _error_stats(np.abs(rel[defined]), len(target)),
        "by_geo_level": by_level,
        "worst_rows": worst,
        "abs_rel_errors_by_geo_level": {lv: np.abs(rel[(levels == lv) & defined]) for lv in by_level},
    }


def _row_error(targets: TargetTable, i: int, estimate: np.ndarray, rel: np.ndarray) -> dict[str, Any]:
    r = targets.rows[i]
    return {"row": r.row, "name": r.name, "variable": r.variable, "geo_level": r.geo_level,
            "geographic_id": r.geographic_id, "target": float(r.value), "estimate": float(estimate[i]),
            "rel_error": float(rel[i])}


def _chunk_record(result: ChunkResult) -> dict[str, Any]:
    started, finished = float(result.started or 0.0), float(result.finished or 0.0)
    return {
        "chunk_id": result.chunk_id, "worker": result.worker or "unknown", "seconds": float(result.seconds),
        "peak_rss_mb": float(result.peak_rss_mb) if result.peak_rss_mb > 0 else None, "nnz": result.nnz,
        "started": started if started > 0 else None, "finished": finished if finished > 0 else None,
        "timings": dict(result.timings), "attempts": result.attempts, "reused": result.reused,
    }


def normalise_chunks(chunk_results: Iterable[ChunkResult]) -> tuple[list[dict[str, Any]], bool]:
    """Every chunk's `ChunkResult` (reused ones too) as plain dicts with `start`/`end` seconds from the first start.

    Returns (chunks, exact): with real start/finish times on every chunk the timeline is exact (a reused chunk
    sits where its earlier run put it); otherwise each worker's chunks are laid back to back in chunk order from
    their durations (exact=False).
    """
    chunks = sorted((_chunk_record(c) for c in chunk_results), key=lambda c: c["chunk_id"])
    exact = bool(chunks) and all(c["started"] is not None and c["finished"] is not None for c in chunks)
    if exact:
        t0 = min(c["started"] for c in chunks)
        for c in chunks:
            c["start"], c["end"] = c["started"] - t0, c["finished"] - t0
    else:
        clock: dict[str, float] = {}
        for c in chunks:
            c["start"] = clock.get(c["worker"], 0.0)
            c["end"] = clock[c["worker"]] = c["start"] + c["seconds"]
    return chunks, exact


def chunk_summary(chunks: list[dict[str, Any]], exact: bool) -> dict[str, Any]:
    """Per-worker load, wall time, slowest chunk, peak RSS and seconds per kernel stage of the chunks computed in
    this invocation (`n_chunks`); `reused_chunks` counts those kept from an earlier run, and `chunks` lists all."""
    everything, chunks = chunks, [c for c in chunks if not c["reused"]]
    reused = len(everything) - len(chunks)
    if not chunks:
        return {"n_chunks": 0, "reused_chunks": reused, "n_workers": 0, "timeline_exact": exact, "workers": [],
                "chunks": everything}
    seconds = np.array([c["seconds"] for c in chunks])
    workers: dict[str, dict[str, Any]] = {}
    for c in chunks:
        w = workers.setdefault(c["worker"], {"worker": c["worker"], "chunks": 0, "busy_seconds": 0.0})
        w["chunks"] += 1
        w["busy_seconds"] += c["seconds"]
    stages: dict[str, float] = {}
    for c in chunks:
        for stage, value in c["timings"].items():
            stages[stage] = stages.get(stage, 0.0) + float(value)
    slowest = chunks[int(np.argmax(seconds))]
    rss = [c["peak_rss_mb"] for c in chunks if c["peak_rss_mb"] is not None]
    return {
        "n_chunks": len(chunks), "n_workers": len(workers), "timeline_exact": exact,
        "wall_seconds": max(c["end"] for c in chunks) - min(c["start"] for c in chunks),
        "compute_seconds": float(seconds.sum()), "median_chunk_seconds": float(np.median(seconds)),
        "slowest_chunk": {"chunk_id": slowest["chunk_id"], "seconds": slowest["seconds"], "worker": slowest["worker"]},
        "peak_rss_mb": max(rss) if rss else None, "nnz": int(sum(c["nnz"] for c in chunks)),
        "retried_chunks": sum(1 for c in chunks if c["attempts"] > 1), "stage_seconds": stages,
        "workers": sorted(workers.values(), key=lambda w: w["worker"]), "chunks": everything,
        "reused_chunks": reused,
    }


def build_report(
    out_dir: str | os.PathLike,
    *,
    matrix: sp.spmatrix,
    targets: TargetTable,
    weights: np.ndarray,
    chunk_results: Iterable[Any],
    verify_summary: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write report.json, report.md and report.png into `out_dir`; return the report as a dict.

    `chunk_results` holds one `ChunkResult` per chunk of the build, those a resume kept marked `reused` (the
    timeline shows them, hatched); an empty list (a build without chunks) is reported as such.
    """
    from policyengine_us_data.outputs.report_figure import render_figure
    from policyengine_us_data.outputs.report_markdown import render_markdown

    if matrix.shape[0] != len(targets):
        raise InputError(f"the matrix has {matrix.shape[0]} rows but there are {len(targets)} targets: "
                         "pass the target table the matrix was built from.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chunks, exact = normalise_chunks(chunk_results)
    fit = fit_summary(matrix, targets, weights)
    errors = fit.pop("abs_rel_errors_by_geo_level")
    report = finite_or_null({
        "format": REPORT_FORMAT,
        "matrix": matrix_summary(matrix, targets),
        "chunks": chunk_summary(chunks, exact),
        "fit": fit,
        "verify": dict(verify_summary) if verify_summary is not None else None,
        "metadata": dict(metadata or {}),
        "files": {"json": REPORT_JSON, "markdown": REPORT_MD, "figure": REPORT_PNG},
    })
    render_figure(out / REPORT_PNG, chunks, exact, errors)
    # strict JSON (JSON.parse rejects NaN): every figure that could not be computed is null
    atomic_write_text(out / REPORT_JSON, json.dumps(report, indent=2, sort_keys=True, allow_nan=False) + "\n")
    atomic_write_text(out / REPORT_MD, render_markdown(report))
    return report


def finite_or_null(value: Any) -> Any:
    """`value` as plain JSON types, with every NaN or infinite number replaced by None (null)."""
    if isinstance(value, Mapping):
        return {str(k): finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [finite_or_null(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _damaged(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    items = summary.get("damaged") or []
    out = []
    for item in items:
        if isinstance(item, Mapping):
            out.append({"chunk_id": item.get("chunk_id"), "path": item.get("path", ""),
                        "defect": item.get("defect", "")})
        else:
            out.append({"chunk_id": None, "path": "", "defect": str(item)})
    return out


def verify_markdown(summary: Mapping[str, Any]) -> str:
    """A short verdict: how many chunks, deep or shallow, and each damaged chunk with its defect."""
    checked = summary.get("chunks_checked", summary.get("checked", 0))
    mode = "deep (every shard re-hashed)" if summary.get("deep") else "shallow (shard headers trusted)"
    damaged = _damaged(summary)
    lines = ["# Shard verification", "",
             f"Checked {checked} chunk(s), {mode}.",
             "All shards are present, intact and from this build." + _cover_sentence(summary) if not damaged
             else f"{len(damaged)} chunk(s) failed verification and must be recomputed (rerun from `dispatch`).", ""]
    if damaged:
        lines += ["| Chunk | Shard | Defect |", "|---:|---|---|"]
        for d in damaged:
            chunk = "" if d["chunk_id"] is None else str(d["chunk_id"])
            lines.append(f"| {chunk} | `{d['path']}` | {_cell(d['defect'])} |")
        lines.append("")
    return "\n".join(lines)


def _cover_sentence(summary: Mapping[str, Any]) -> str:
    covered = summary.get("columns_covered_once")
    plan = summary.get("chunk_plan")
    if not covered:
        return ""
    return f" Their column sets cover each of the {covered:,} columns exactly once ({plan} chunk plan)."


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_verify_report(path: str | os.PathLike, summary: Mapping[str, Any]) -> dict[str, Path]:
    """Write the verify step's summary as JSON at `path` and a short markdown beside it (same stem, .md).

    Expected keys: `chunks_checked` (int), `deep` (bool), `damaged` (list of {chunk_id, path, defect});
    any others are kept in the JSON as given.
    """
    json_path = Path(path)
    md_path = json_path.with_suffix(".md")
    document = dict(summary)
    document["damaged"] = _damaged(summary)
    atomic_write_json(json_path, document)
    atomic_write_text(md_path, verify_markdown(summary))
    return {"json": json_path, "markdown": md_path}
