"""Planning: which steps are up to date, which must run, and a cause (a ``Cause``) plus a reason for each.

A step is up to date when its checkpoint exists and is intact, its live outputs are the checkpointed ones, and
its fingerprint matches. The fingerprint is built from its declared ``params`` (argparse dests), the content of
its declared input files, the hashes of the project files its code reaches, and the content ids of the
checkpoints before it (so an upstream rerun that gives the same bytes stales nothing). The first step that is
not up to date runs, and every later step up to the target runs after it.
"""

from __future__ import annotations

import argparse
import enum
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checkpoints import CheckpointError, CheckpointStore, Manifest
from .command import BaseCommand
from .inputs import MISSING, InputDigests
from .journal import UNFINISHED, Journal


class Cause(enum.Enum):
    """Why a step must run (the planner decides on these, never on the text of a reason)."""

    NEVER_RUN = "never run"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    FORGOTTEN = "forgotten"
    CHECKPOINT_DAMAGED = "checkpoint damaged"
    OUTPUT = "output missing or changed"
    PARAMS = "params changed"
    INPUT = "input file changed"
    CODE = "code changed"
    UPSTREAM = "an earlier step re-ran"
    UPSTREAM_PLANNED = "an earlier step will re-run"
    RESET_INTERRUPTED = "a reset was interrupted"
    FORCED = "forced"


@dataclass(frozen=True)
class Step:
    """A registered step: label, order and command class."""

    label: str
    order: float
    cls: type[BaseCommand]


@dataclass
class StepStatus:
    """The verdict on one step: ``cause`` and ``reason`` are None when it is up to date."""

    step: Step
    index: int
    parts: dict[str, Any]
    manifest: Manifest | None
    reason: str | None
    cause: Cause | None = None
    resume: bool = False
    repair: bool = False

    @property
    def label(self) -> str:
        return self.step.label

    @property
    def up_to_date(self) -> bool:
        return self.reason is None


@dataclass
class Plan:
    """Steps to run for one ``--to`` target, where to reset the directory first, and the verdicts on all."""

    statuses: list[StepStatus]
    target: int
    to_run: list[StepStatus] = field(default_factory=list)
    base: Manifest | None = None

    @property
    def skipped(self) -> list[StepStatus]:
        first = self.to_run[0].index if self.to_run else self.target + 1
        return self.statuses[:first]


class ParamError(ValueError):
    """A step declares a param that no argument provides."""


def jsonable(value: Any) -> Any:
    """Param values as JSON: plain scalars and lists stay, Paths become strings, anything else its repr."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def step_parts(step: Step, args: argparse.Namespace, upstream: list[list[str]],
               inputs: InputDigests | None = None) -> dict[str, Any]:
    """The fingerprint's parts: params, input file digests (when the step names any), code identity, and the
    content ids of the checkpoints before."""
    params = {}
    for dest in step.cls.params:
        if not hasattr(args, dest):
            raise ParamError(f"step {step.label!r} declares param {dest!r} but no argument has that dest")
        params[dest] = jsonable(getattr(args, dest))
    parts: dict[str, Any] = {"params": params, "code": step.cls.code_identity(),
                             "upstream": [list(u) for u in upstream]}
    files = list(step.cls.input_files(args))
    if files:
        parts["inputs"] = (inputs or InputDigests()).digests(files)
    return parts


def fingerprint(parts: dict[str, Any]) -> str:
    """A short stable hash of the fingerprint parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _fmt(value: Any) -> str:
    return repr(value) if isinstance(value, str) else json.dumps(value)


def _code_change(old: Any, new: Any) -> str | None:
    """Which project file changed between two code identities ({file: hash}), or None when equal."""
    if old == new:
        return None
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return "code changed"
    changed = sorted(f for f in set(old) | set(new) if old.get(f) != new.get(f))
    more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
    return f"code changed: {changed[0]}{more}"


def compare_parts(stored: dict[str, Any], current: dict[str, Any]) -> tuple[Cause, str] | None:
    """Why the stored fingerprint differs from the current one, or None when they match."""
    old, new = stored.get("params", {}), current["params"]
    changes = [f"{dest} changed: {_fmt(old.get(dest))} -> {_fmt(new.get(dest))}"
               for dest in sorted(set(old) | set(new)) if old.get(dest) != new.get(dest)]
    if changes:
        return Cause.PARAMS, "; ".join(changes)
    old_inputs, new_inputs = stored.get("inputs", {}), current.get("inputs", {})
    for path in sorted(set(old_inputs) | set(new_inputs)):
        if old_inputs.get(path) != new_inputs.get(path):
            return Cause.INPUT, f"input file {'missing' if new_inputs.get(path) == MISSING else 'changed'}: {path}"
    code = _code_change(stored.get("code"), current["code"])
    if code:
        return Cause.CODE, code
    stored_up = dict(map(tuple, stored.get("upstream", [])))
    for label, content in current["upstream"]:
        if stored_up.get(label) != content:
            return Cause.UPSTREAM, f"an earlier step re-ran: {label}"
    if len(stored_up) != len(current["upstream"]):
        return Cause.UPSTREAM, "the steps before it changed"
    return None


def _missing_reason(last: dict[str, Any] | None) -> tuple[Cause, str]:
    """Why a step without a checkpoint must run, from its latest journal record."""
    if last is None:
        return Cause.NEVER_RUN, "never run"
    status = last.get("status")
    if status == "failed":
        error = str(last.get("error") or "").splitlines()[0:1]
        return Cause.FAILED, "failed" + (f": {error[0][:80]}" if error and error[0] else "")
    if status == "interrupted":
        return Cause.INTERRUPTED, "interrupted"
    if status == "running":
        return Cause.INTERRUPTED, "interrupted (the runner stopped without recording an end)"
    if status in ("forgotten", "reset") and last.get("reason"):
        return Cause.FORGOTTEN, str(last["reason"])
    return Cause.FORGOTTEN, "checkpoint missing"


def own_reason(step: Step, parts: dict[str, Any], store: CheckpointStore, journal: Journal,
               refresh: bool) -> tuple[Manifest | None, tuple[Cause, str] | None]:
    """The step's own cause to run (ignoring earlier steps' plans) and its checkpoint manifest."""
    try:
        manifest = store.load(step.label)
    except CheckpointError as exc:
        return None, (Cause.CHECKPOINT_DAMAGED, f"outputs modified since the checkpoint ({exc})")
    if manifest is None:
        return None, _missing_reason(journal.last(step.label))
    problems = store.verify(manifest, refresh=refresh)
    if problems:
        more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
        return manifest, (Cause.CHECKPOINT_DAMAGED, f"outputs modified since the checkpoint: {problems[0]}{more}")
    live = store.live_problems(manifest, manifest.own_files())
    if live:
        more = f" and {len(live) - 1} more" if len(live) > 1 else ""
        return manifest, (Cause.OUTPUT, live[0] + more)
    return manifest, compare_parts(manifest.meta.get("parts", {}), parts)


def assess(steps: list[Step], args: argparse.Namespace, store: CheckpointStore, journal: Journal,
           refresh: bool = False, inputs: InputDigests | None = None,
           reset_pending: int | None = None) -> list[StepStatus]:
    """A verdict for every step, in order. ``reset_pending``: the index a half-done reset restores to."""
    statuses: list[StepStatus] = []
    upstream: list[list[str]] = []
    first_stale: str | None = None
    for index, step in enumerate(steps):
        parts = step_parts(step, args, upstream, inputs)
        manifest, why = own_reason(step, parts, store, journal, refresh)
        if reset_pending is not None and index > reset_pending:
            why = (Cause.RESET_INTERRUPTED, "a reset was interrupted; the next run finishes it")
        if first_stale is not None and (why is None or why[0] is Cause.UPSTREAM):
            why = (Cause.UPSTREAM_PLANNED, f"an earlier step will re-run: {first_stale}")
        if why is not None and first_stale is None:
            first_stale = step.label
        cause, reason = why if why else (None, None)
        statuses.append(StepStatus(step, index, parts, manifest, reason, cause))
        upstream.append([step.label, manifest.content_id if manifest else ""])
    return statuses


def can_resume(status: StepStatus, journal: Journal) -> bool:
    """A resumable step resumes when the journal's very latest record is its own unfinished attempt with
    the same fingerprint: nothing else touched the directory since."""
    latest = journal.latest()
    return (status.step.cls.resumable and latest is not None and latest.get("label") == status.label
            and latest.get("status") in UNFINISHED and latest.get("fingerprint") == fingerprint(status.parts))


def can_repair(status: StepStatus) -> bool:
    """A resumable step whose own outputs were damaged or changed reruns on top of them: it checks what it
    finds (that is what resumable means), so only the damaged part is redone instead of everything."""
    return (status.step.cls.resumable and status.manifest is not None
            and status.cause in (Cause.CHECKPOINT_DAMAGED, Cause.OUTPUT))


def make_plan(steps: list[Step], args: argparse.Namespace, store: CheckpointStore, journal: Journal,
              target: int, force: bool, refresh: bool = False, inputs: InputDigests | None = None,
              reset_pending: int | None = None) -> Plan:
    """What ``--to steps[target]`` (with ``--force``) would run, and which checkpoint to reset to first."""
    statuses = assess(steps, args, store, journal, refresh, inputs, reset_pending)
    if force and statuses[target].up_to_date:
        statuses[target].reason, statuses[target].cause = "forced (--force)", Cause.FORCED
    plan = Plan(statuses=statuses, target=target)
    first = next((s for s in statuses[: target + 1] if not s.up_to_date), None)
    if first is None:
        return plan
    plan.to_run = statuses[first.index : target + 1]
    first.resume = can_resume(first, journal)
    first.repair = not first.resume and can_repair(first)
    plan.base = statuses[first.index - 1].manifest if first.index > 0 else None
    return plan
