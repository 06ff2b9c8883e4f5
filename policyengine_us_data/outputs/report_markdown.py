"""report.md: the run report as short sentences and tables that read well in a GitHub job summary."""

from __future__ import annotations

import math
from typing import Any, Mapping


MAX_METADATA_ROWS = 40
MAX_WORKER_ROWS = 10


def render_markdown(report: Mapping[str, Any]) -> str:
    """The whole report.md text from the report dict `build_report` computes."""
    sections = [
        _header(report),
        _matrix_section(report["matrix"]),
        _fit_section(report["fit"]),
        _chunk_section(report["chunks"]),
        _verify_section(report.get("verify")),
        _run_section(report.get("metadata") or {}),
    ]
    return "\n".join(s for s in sections if s)


# -- formatting -----------------------------------------------------------------------------------


def _int(n: int | float) -> str:
    return f"{int(n):,}"


def _num(x: float | None) -> str:
    """Large totals in words a reader scans quickly: 1.23 B, 45.6 M, 12,345, 0.5."""
    if x is None or not math.isfinite(x):
        return "n/a"
    size = abs(x)
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
        if size >= scale:
            return f"{x / scale:,.2f} {unit}"
    return f"{x:,.0f}" if size >= 1e3 else f"{x:.4g}"


def _pct(x: float | None, signed: bool = False) -> str:
    if x is None or not math.isfinite(x):  # never "nan%"
        return "n/a"
    return f"{x * 100:+,.1f}%" if signed else f"{x * 100:,.1f}%"


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], align: str, rows: list[list[Any]]) -> list[str]:
    """A markdown table; `align` has one character per column: l (left) or r (right)."""
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines + [""]


# -- sections -------------------------------------------------------------------------------------


def _density(d: float) -> str:
    return _pct(d) if d >= 1e-3 or d == 0 else f"{d * 100:.2g}%"


def _header(report: Mapping[str, Any]) -> str:
    m, chunks, overall = report["matrix"], report["chunks"], report["fit"]["overall"]
    n_rows, n_cols = m["shape"]
    summary = [f"**{_int(n_rows)} targets × {_int(n_cols)} columns**, {_int(m['nnz'])} non-zeros "
               f"(density {_density(m['density'])})."]
    if chunks["n_chunks"]:
        summary.append(f"{_int(chunks['n_chunks'])} chunks ran on {chunks['n_workers']} worker(s) in "
                       f"{_dur(chunks['wall_seconds'])}.")
    else:
        summary.append("No chunks ran in this invocation: all were already done.")
    summary.append(f"Before calibration the median absolute relative error is "
                   f"{_pct(overall['median_abs_rel_error'])}.")
    times = _build_times((report.get("metadata") or {}).get("timings") or {})
    if times:
        summary.append(times)
    return "\n".join(["# Calibration matrix report", "", " ".join(summary), "",
                      f"![Chunk timeline, durations, peak memory and relative error by geo level]({report['files']['figure']})", ""])


def _build_times(timings: Mapping[str, Any]) -> str:
    """Total build time (the steps' last successful runs, summed) and its parts, as far as they were measured."""
    parts = [(name, timings.get(key)) for name, key in (("warm-up", "warm_up_seconds"),
                                                       ("dispatch with warm-up", "dispatch_wall_seconds"),
                                                       ("assembly", "assemble_seconds"))]
    shown = ", ".join(f"{name} {_dur(v)}" for name, v in parts if isinstance(v, (int, float)))
    total = timings.get("total_seconds")
    if isinstance(total, (int, float)):
        return f"Build time {_dur(total)} in total" + (f" ({shown})." if shown else ".")
    return f"Build time: {shown}." if shown else ""


def _matrix_section(m: Mapping[str, Any]) -> str:
    levels = list(m["rows_per_geo_level"])
    rows = [[f"`{v}`"] + [_int(counts.get(g, 0)) for g in levels] + [_int(sum(counts.values()))]
            for v, counts in m["rows_per_variable_and_geo_level"].items()]
    rows.append(["**all variables**"] + [f"**{_int(m['rows_per_geo_level'][g])}**" for g in levels]
                + [f"**{_int(sum(m['rows_per_geo_level'].values()))}**"])
    lines = ["## Matrix", "", "Rows per target variable and geo level:", ""]
    lines += _table(["Variable"] + levels + ["Total"], "l" + "r" * (len(levels) + 1), rows)
    if m["empty_rows"]:
        examples = ", ".join(f"`{n}`" for n in m["empty_row_names"])
        lines += [f"**{_int(m['empty_rows'])} row(s) have no non-zero entry**, so no weights can reach their "
                  f"targets (first: {examples}).", ""]
    else:
        lines += ["Every row has at least one non-zero entry.", ""]
    return "\n".join(lines)


def _fit_section(fit: Mapping[str, Any]) -> str:
    lines = ["## Distance from the targets before calibration", "",
             f"Estimate = X · w with the uncalibrated weights w (each household's weight split evenly over its "
             f"clones; {_int(fit['weights']['n'])} columns, total {_num(fit['weights']['sum'])}). "
             "Relative error = (estimate − target) / target; a row whose target is 0 has none (n/a).", ""]
    rows = [[g, _int(s["rows"]), _int(s["with_error"]), _pct(s["median_abs_rel_error"]),
             _pct(s["p90_abs_rel_error"])] for g, s in fit["by_geo_level"].items()]
    o = fit["overall"]
    rows.append(["**all**", f"**{_int(o['rows'])}**", f"**{_int(o['with_error'])}**",
                 f"**{_pct(o['median_abs_rel_error'])}**", f"**{_pct(o['p90_abs_rel_error'])}**"])
    lines += _table(["Geo level", "Rows", "With rel. error", "Median abs. rel. error", "90th pct abs. rel. error"],
                    "lrrrr", rows)
    if o["zero_targets"]:
        lines += [f"{_int(o['zero_targets'])} row(s) have a zero target: their relative error is n/a.", ""]
    if fit["worst_rows"]:
        lines += [f"### The {len(fit['worst_rows'])} rows furthest from their targets", ""]
        lines += _table(["Row", "Name", "Target", "Estimate", "Rel. error"], "rlrrr",
                        [[w["row"], f"`{w['name']}`", _num(w["target"]), _num(w["estimate"]),
                          _pct(w["rel_error"], signed=True)] for w in fit["worst_rows"]])
    return "\n".join(lines)


def _chunk_section(c: Mapping[str, Any]) -> str:
    lines = ["## Chunks", ""]
    reused = c.get("reused_chunks", 0)
    if reused:
        lines += [f"{_int(reused)} chunk(s) were reused from an earlier run (verified shards of this lineage; "
                  "hatched in the timeline, at the times they were computed).", ""]
    if not c["n_chunks"]:
        return "\n".join(lines + ["No chunks ran in this invocation: every chunk was already done (a resumed run). "
                                  "The matrix was assembled from the existing shards.", ""])
    speedup = c["compute_seconds"] / c["wall_seconds"] if c["wall_seconds"] > 0 else None
    slow = c["slowest_chunk"]
    text = (f"{_int(c['n_chunks'])} chunks on {c['n_workers']} worker(s): wall time {_dur(c['wall_seconds'])}, "
            f"compute {_dur(c['compute_seconds'])}" + (f" (×{speedup:.1f} in parallel)" if speedup else "") + ". "
            f"Median chunk {_dur(c['median_chunk_seconds'])}; slowest chunk {slow['chunk_id']} "
            f"({_dur(slow['seconds'])} on `{slow['worker']}`). ")
    rss = c["peak_rss_mb"]
    text += f"Peak RSS {rss:,.0f} MB." if rss is not None else "Peak RSS was not recorded."
    lines += [text, ""]
    if c["retried_chunks"]:
        lines += [f"{c['retried_chunks']} chunk(s) needed more than one attempt.", ""]
    if not c["timeline_exact"]:
        lines += ["Start and finish times were not recorded for every chunk, so the timeline lays each worker's "
                  "chunks back to back.", ""]
    lines += _worker_table(c["workers"], c["wall_seconds"])
    stages = c["stage_seconds"]
    if stages:
        total = sum(stages.values())
        lines += ["Time per kernel stage, summed over chunks:", ""]
        lines += _table(["Stage", "Time", "Share"], "lrr",
                        [[s, _dur(v), _pct(v / total) if total > 0 else "n/a"] for s, v in stages.items()])
    return "\n".join(lines)


def _worker_table(workers: list[dict[str, Any]], wall: float) -> list[str]:
    """Every worker when there are few; otherwise the spread and the busiest few."""
    lines: list[str] = []
    shown = workers
    if len(workers) > MAX_WORKER_ROWS:
        busy = sorted(w["busy_seconds"] for w in workers)
        lines += [f"Busy time per worker ranges from {_dur(busy[0])} to {_dur(busy[-1])} "
                  f"(median {_dur(busy[len(busy) // 2])}); the {MAX_WORKER_ROWS} busiest:", ""]
        shown = sorted(workers, key=lambda w: -w["busy_seconds"])[:MAX_WORKER_ROWS]
    return lines + _table(["Worker", "Chunks", "Busy", "Busy share of wall time"], "lrrr",
                          [[f"`{w['worker']}`", w["chunks"], _dur(w["busy_seconds"]),
                            _pct(w["busy_seconds"] / wall) if wall > 0 else "n/a"] for w in shown])


def _verify_section(v: Mapping[str, Any] | None) -> str:
    if v is None:
        return ""
    checked = v.get("chunks_checked", v.get("checked", 0))
    mode = "deep: every shard re-hashed" if v.get("deep") else "shallow: shard headers trusted"
    damaged = v.get("damaged") or []
    verdict = "none damaged" if not damaged else f"**{len(damaged)} damaged**"
    return "\n".join(["## Verification", "", f"{_int(checked)} chunk(s) checked ({mode}); {verdict}.", ""])


def _flatten(obj: Any, prefix: str = "", depth: int = 0) -> list[tuple[str, Any]]:
    if isinstance(obj, Mapping) and depth < 2:
        out: list[tuple[str, Any]] = []
        for key in sorted(obj, key=str):
            out += _flatten(obj[key], f"{prefix}.{key}" if prefix else str(key), depth + 1)
        return out
    if isinstance(obj, (list, tuple, Mapping)):
        return [(prefix, f"{len(obj)} item(s)")] if len(str(obj)) > 80 else [(prefix, obj)]
    return [(prefix, obj)]


def _run_section(metadata: Mapping[str, Any]) -> str:
    items = _flatten(metadata)
    if not items:
        return ""
    lines = ["## Run", ""]
    rows = [[f"`{k}`", f"`{v}`" if isinstance(v, str) else v] for k, v in items[:MAX_METADATA_ROWS]]
    lines += _table(["Field", "Value"], "ll", rows)
    if len(items) > MAX_METADATA_ROWS:
        lines += [f"…and {len(items) - MAX_METADATA_ROWS} more fields in `report.json`.", ""]
    return "\n".join(lines)
