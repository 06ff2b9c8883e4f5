"""report.png: one figure a reviewer can read at a glance.

Top: the chunk timeline, one lane per worker, one bar per chunk from its start to its finish.
Bottom: seconds per chunk (coloured by worker), peak RSS per chunk, and the distribution of |relative
error| of the uncalibrated weights per geo level. Seconds are not stacked by kernel stage: the simulation is
nearly all of every chunk, so such a plot showed one colour (report.md keeps the per-stage table).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from policyengine_us_data.utils.atomic import atomic_path

MAX_LANES = 30  # more workers than this: lanes without labels, one colour
MAX_TIMELINE_INCHES = 6.0
LABEL_WIDTH = 28


def _short(label: str) -> str:
    return label if len(label) <= LABEL_WIDTH else "…" + label[-(LABEL_WIDTH - 1):]


def _worker_colours(workers: list[str]) -> dict[str, Any]:
    import matplotlib.pyplot as plt

    if len(workers) > MAX_LANES:  # colours could no longer tell workers apart; lanes still do
        return {w: "#4c72b0" for w in workers}
    cmap = plt.get_cmap("tab10" if len(workers) <= 10 else "tab20")
    return {w: cmap(i % cmap.N) for i, w in enumerate(workers)}


def _nothing(ax: Any, title: str, message: str) -> None:
    ax.set_title(title, loc="left", fontsize=11)
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize=10, color="#555555",
            wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _timeline(ax: Any, chunks: list[dict[str, Any]], exact: bool, colours: dict[str, Any]) -> None:
    title = "Chunk timeline per worker" + ("" if exact or not chunks else " (approximate: start times not recorded)")
    if any(c.get("reused") for c in chunks):
        title += " (hatched: reused from an earlier run)"
    if not chunks:
        _nothing(ax, title, "No chunks ran in this invocation: every chunk was already done (resumed run).")
        return
    workers = list(colours)
    lanes = {w: i for i, w in enumerate(workers)}
    for c in chunks:
        reused = c.get("reused", False)  # kept from an earlier run: hatched and faded
        ax.broken_barh([(c["start"], max(c["end"] - c["start"], 1e-3))], (lanes[c["worker"]] - 0.4, 0.8),
                       facecolors=colours[c["worker"]], edgecolors="white", linewidth=0.8,
                       hatch="///" if reused else None, alpha=0.45 if reused else 1.0)
        if len(chunks) <= 60:
            ax.text((c["start"] + c["end"]) / 2, lanes[c["worker"]], str(c["chunk_id"]), ha="center",
                    va="center", fontsize=7, color="white", clip_on=True)
    shown = len(workers) <= MAX_LANES
    ax.set_yticks(range(len(workers)) if shown else [])
    ax.set_yticklabels([_short(w) for w in workers] if shown else [], fontsize=8)
    ax.set_ylim(len(workers) - 0.5, -0.5)
    ax.set_xlim(0, max(c["end"] for c in chunks) * 1.01)
    ax.set_xlabel("seconds since the first chunk started")
    ax.set_ylabel("worker" if shown else f"{len(workers)} workers")
    ax.set_title(title, loc="left", fontsize=11)
    ax.grid(axis="x", alpha=0.3)


def _bar_width(chunks: list[dict[str, Any]]) -> float:
    return 0.85 if len(chunks) <= 100 else 1.0  # touching bars: gaps alias away at hundreds of chunks


def _chunk_axis(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("chunk")


def _durations(ax: Any, chunks: list[dict[str, Any]], colours: dict[str, Any]) -> None:
    title = "Seconds per chunk"
    if not chunks:
        _nothing(ax, title, "no chunks ran")
        return
    ids = np.array([c["chunk_id"] for c in chunks])
    ax.bar(ids, [c["seconds"] for c in chunks], color=[colours[c["worker"]] for c in chunks],
           width=_bar_width(chunks))
    ax.set_title(title, loc="left", fontsize=11)
    _chunk_axis(ax)
    ax.set_ylabel("seconds")
    ax.grid(axis="y", alpha=0.3)


def _memory(ax: Any, chunks: list[dict[str, Any]], colours: dict[str, Any]) -> None:
    title = "Peak RSS per chunk"
    known = [c for c in chunks if c["peak_rss_mb"] is not None]
    if not known:
        _nothing(ax, title, "no chunks ran" if not chunks else "peak RSS not recorded")
        return
    ax.bar([c["chunk_id"] for c in known], [c["peak_rss_mb"] for c in known],
           color=[colours[c["worker"]] for c in known], width=_bar_width(known))
    peak = max(c["peak_rss_mb"] for c in known)
    ax.axhline(peak, color="#333333", linewidth=0.8, linestyle="--")
    ax.set_ylim(0, peak * 1.15)
    ax.text(0.99, peak * 1.02, f"max {peak:,.0f} MB", transform=ax.get_yaxis_transform(), ha="right",
            va="bottom", fontsize=8)
    ax.set_title(title + " (colour = worker)", loc="left", fontsize=11)
    _chunk_axis(ax)
    ax.set_ylabel("MB")
    ax.grid(axis="y", alpha=0.3)


def _errors(ax: Any, errors: Mapping[str, np.ndarray]) -> None:
    title = "|Relative error| before calibration"
    levels = [lv for lv, e in errors.items() if len(e)]
    if not levels:
        _nothing(ax, title, "no target with a non-zero value")
        return
    floor = 1e-4
    data = [np.maximum(errors[lv], floor) for lv in levels]
    parts = ax.boxplot(data, whis=(10, 90), showfliers=True, patch_artist=True, widths=0.6,
                       flierprops={"markersize": 2, "alpha": 0.5})
    for patch in parts["boxes"]:
        patch.set_facecolor("#9ecae1")
    ax.set_xticks(range(1, len(levels) + 1))
    ax.set_xticklabels([f"{lv}\n(n={len(errors[lv]):,})" for lv in levels], fontsize=8)
    ax.set_yscale("log")
    ax.axhline(0.1, color="#c51b8a", linewidth=0.8, linestyle=":")
    ax.text(0.01, 0.1, "10%", transform=ax.get_yaxis_transform(), color="#c51b8a", fontsize=7, va="bottom")
    ax.set_title(title, loc="left", fontsize=11)
    ax.set_ylabel("|estimate − target| / |target|")
    ax.grid(axis="y", alpha=0.3)


def render_figure(
    path: str | os.PathLike, chunks: list[dict[str, Any]], exact: bool, errors: Mapping[str, np.ndarray]
) -> None:
    """Draw the four panels and write the PNG atomically (Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workers = sorted({c["worker"] for c in chunks})
    colours = _worker_colours(workers)
    top = 1.2 + min(0.32 * max(len(workers), 1), MAX_TIMELINE_INCHES)
    fig = plt.figure(figsize=(15, top + 4.2), dpi=100, layout="constrained")
    grid = fig.add_gridspec(2, 3, height_ratios=[top, 4.2])
    _timeline(fig.add_subplot(grid[0, :]), chunks, exact, colours)
    _durations(fig.add_subplot(grid[1, 0]), chunks, colours)
    _memory(fig.add_subplot(grid[1, 1]), chunks, colours)
    _errors(fig.add_subplot(grid[1, 2]), errors)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            fig.savefig(handle, format="png")
    finally:
        plt.close(fig)
