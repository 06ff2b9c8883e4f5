"""``--status`` and ``--dry-run``: one JSON-able report each, printed as text or, with ``--json``, as JSON.

The text is drawn from the same dict the JSON carries, so the two never disagree. Keys are documented in
docs/contracts.md and only ever added to.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from .fsutil import human_bytes, printable
from .journal import Journal
from .planning import Plan, StepStatus

SCHEMA_VERSION = 1


def _when(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch)) if epoch else "-"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    return f"{minutes}m{sec:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _state(status: StepStatus, journal: Journal) -> str:
    if status.up_to_date:
        return "done"
    return "stale" if journal.last(status.label) or status.manifest else "pending"


def format_table(rows: list[list[str]]) -> str:
    """Left-aligned columns separated by two spaces."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _running_step(journal: Journal, holder: dict | None) -> str | None:
    """The step the lock holder is running: the journal's latest record, when it is still open."""
    latest = journal.latest()
    if holder and latest and latest.get("status") == "running":
        return latest.get("label")
    return None


def status_report(statuses: list[StepStatus], journal: Journal, run_dir: Path, holder: dict | None,
                  remembered: dict[str, dict[str, Any]], changes: dict[str, dict[str, list[Any]]]) -> dict[str, Any]:
    """Everything ``--status`` says, as plain data (``holder``: the lock holder of a build running now)."""
    running = _running_step(journal, holder)
    steps = []
    for status in statuses:
        done = journal.last_done(status.label) if status.manifest else None
        live = status.label == running
        steps.append({
            "order": status.step.order, "label": status.label,
            "state": "running" if live else _state(status, journal),
            "cause": None if live or status.cause is None else status.cause.value,
            "reason": "running now" if live else status.reason,
            "finished": done.get("end") if done else None,
            "duration_s": done.get("duration_s") if done else None,
            "bytes_written": done.get("bytes_written") if done else None,
            "params": remembered.get(status.label, {}),
            "changes": changes.get(status.label, {}),
        })
    last = statuses[-1]
    kept = last.manifest is not None and not last.up_to_date
    return {
        "version": SCHEMA_VERSION, "run_dir": str(run_dir), "exists": run_dir.exists(),
        "running": None if holder is None else {"pid": holder.get("pid"), "host": holder.get("host"),
                                                 "since": holder.get("since"), "step": running},
        "steps": steps,
        "previous_build": f"--reset-to {last.label}" if kept else None,
    }


def _values(values: dict[str, Any]) -> str:
    return ", ".join(f"{dest}={json.dumps(value)}" for dest, value in values.items())


def format_status(report: dict[str, Any]) -> str:
    """The table (order, label, state, reason in full, finished, duration, output size) under a line naming the
    run directory and any build running in it, then each step's remembered flags and what this command changes."""
    rows = [["order", "label", "state", "reason", "finished", "duration", "output"]]
    for step in report["steps"]:
        rows.append([f"{step['order']:g}", step["label"], step["state"], printable(step["reason"] or "up to date"),
                     _when(step["finished"]), _duration(step["duration_s"]),
                     human_bytes(step["bytes_written"]) if step["finished"] else "-"])
    head = f"run directory: {printable(report['run_dir'])}" + ("" if report["exists"] else " (does not exist yet)")
    lines = [head]
    running = report["running"]
    if running:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(running["since"])) if running["since"] else "?"
        lines.append(f"running now: pid {running['pid']} on host {running['host']} since {since}"
                     + (f", step {running['step']}" if running["step"] else ""))
    lines.append(format_table(rows))
    remembered = [s for s in report["steps"] if s["params"]]
    if remembered:
        lines.append("remembered flags (used when not given; --forget-params for the defaults):")
        lines += [f"  {s['label']}: {printable(_values(s['params']))}" for s in remembered]
    for step in report["steps"]:
        for dest, (old, new) in step["changes"].items():
            lines.append(f"this command line changes {step['label']}: {dest} {json.dumps(old)} -> {json.dumps(new)}")
    if report["previous_build"]:
        lines.append(f"the previous build is kept: {report['previous_build']} brings it back")
    return "\n".join(lines)


def dry_run_report(plan: Plan, ns: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    """Everything ``--dry-run`` says, as plain data: where it starts, each step to run, why, and the step's own
    description (``BaseCommand.describe``: an estimate, say)."""
    target = plan.statuses[plan.target].label
    start = None
    if plan.to_run:
        first = plan.to_run[0]
        if first.resume:
            start = {"action": "resume", "text": f"resume {first.label} on its partial outputs (no reset)"}
        elif first.repair:
            start = {"action": "repair", "text": f"reset everything but {first.label}'s own outputs, which it repairs"}
        elif ns.allow_dirty:
            start = {"action": "keep", "text": "keep the directory as it is (--allow-dirty)"}
        else:
            base = plan.base.label if plan.base else None
            start = {"action": "reset", "to": base,
                     "text": f"reset the runner's files to the checkpoint of {base or '(empty)'}"}
    run = [{"label": s.label, "cause": s.cause.value if s.cause else None, "reason": s.reason,
            "details": s.step.cls.describe(ns, run_dir)} for s in plan.to_run]
    return {"version": SCHEMA_VERSION, "run_dir": str(run_dir), "target": target, "start": start, "run": run,
            "up_to_date": [s.label for s in plan.skipped]}


def format_dry_run(report: dict[str, Any]) -> str:
    """``--dry-run``: what would run, from which checkpoint, and why; a step's summary on the line below it."""
    if not report["run"]:
        return f"nothing to run: every step up to {report['target']} is up to date"
    lines = [f"would {report['start']['text']}, then run:"]
    for step in report["run"]:
        lines.append(f"  {step['label']}: {step['reason']}")
        summary = (step["details"] or {}).get("summary")
        if summary:
            lines.append(f"      {summary}")
    if report["up_to_date"]:
        lines.append("up to date: " + ", ".join(report["up_to_date"]))
    return "\n".join(lines)
