"""Planning: which steps are up to date, which must run, and a reason a person can act on for each.

A step is up to date when its checkpoint exists and is intact and its fingerprint matches. The fingerprint is
built from its declared ``params`` (argparse dests), the content of its declared input files, the identity of
its code, and the checkpoint ids of the steps before it. The first step that is not up to date runs, and every
later step up to the target runs after it (their upstream checkpoints are about to change).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checkpoints import BASE_LABEL, CheckpointError, CheckpointStore, Manifest
from .command import BaseCommand
from .inputs import MISSING, InputDigests
from .journal import UNFINISHED, Journal


@dataclass(frozen=True)
class Step:
    """A registered step: label, order and command class."""

    label: str
    order: float
    cls: type[BaseCommand]


@dataclass
class StepStatus:
    """The verdict on one step: ``reason`` is None when it is up to date."""

    step: Step
    index: int
    parts: dict[str, Any]
    manifest: Manifest | None
    reason: str | None
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
    checkpoint ids of the steps before."""
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


def compare_parts(stored: dict[str, Any], current: dict[str, Any]) -> str | None:
    """Why the stored fingerprint differs from the current one, or None when they match."""
    old, new = stored.get("params", {}), current["params"]
    changes = [f"{dest} changed: {_fmt(old.get(dest))} -> {_fmt(new.get(dest))}"
               for dest in sorted(set(old) | set(new)) if old.get(dest) != new.get(dest)]
    if changes:
        return "; ".join(changes)
    old_inputs, new_inputs = stored.get("inputs", {}), current.get("inputs", {})
    for path in sorted(set(old_inputs) | set(new_inputs)):
        if old_inputs.get(path) != new_inputs.get(path):
            return f"input file {'missing' if new_inputs.get(path) == MISSING else 'changed'}: {path}"
    if stored.get("code") != current["code"]:
        return "code changed"
    stored_up = dict(map(tuple, stored.get("upstream", [])))
    for label, ckpt_id in current["upstream"]:
        if stored_up.get(label) != ckpt_id:
            return f"an earlier step re-ran: {label}"
    if len(stored_up) != len(current["upstream"]):
        return "the steps before it changed"
    return None


def _missing_reason(last: dict[str, Any] | None) -> str:
    """Why a step without a checkpoint must run, from its latest journal record."""
    if last is None:
        return "never run"
    status = last.get("status")
    if status == "failed":
        error = str(last.get("error") or "").splitlines()[0:1]
        return "failed" + (f": {error[0][:80]}" if error and error[0] else "")
    if status == "interrupted":
        return "interrupted"
    if status == "running":
        return "interrupted (the runner stopped without recording an end)"
    if status in ("forgotten", "reset") and last.get("reason"):
        return str(last["reason"])
    return "checkpoint missing"


def own_reason(step: Step, parts: dict[str, Any], store: CheckpointStore, journal: Journal,
               refresh: bool) -> tuple[Manifest | None, str | None]:
    """The step's own reason to run (ignoring earlier steps' plans) and its checkpoint manifest."""
    try:
        manifest = store.load(step.label)
    except CheckpointError as exc:
        return None, f"outputs modified since the checkpoint ({exc})"
    if manifest is None:
        return None, _missing_reason(journal.last(step.label))
    problems = store.verify(manifest, refresh=refresh)
    if problems:
        more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
        return manifest, f"outputs modified since the checkpoint: {problems[0]}{more}"
    return manifest, compare_parts(manifest.meta.get("parts", {}), parts)


def assess(steps: list[Step], args: argparse.Namespace, store: CheckpointStore, journal: Journal,
           refresh: bool = False, inputs: InputDigests | None = None) -> list[StepStatus]:
    """A verdict for every step, in order."""
    statuses: list[StepStatus] = []
    upstream: list[list[str]] = []
    first_stale: str | None = None
    for index, step in enumerate(steps):
        parts = step_parts(step, args, upstream, inputs)
        manifest, reason = own_reason(step, parts, store, journal, refresh)
        if first_stale is not None and (reason is None or reason.startswith("an earlier step re-ran")):
            reason = f"an earlier step will re-run: {first_stale}"
        if reason is not None and first_stale is None:
            first_stale = step.label
        statuses.append(StepStatus(step, index, parts, manifest, reason))
        upstream.append([step.label, manifest.id if manifest else ""])
    return statuses


def can_resume(status: StepStatus, journal: Journal) -> bool:
    """A resumable step resumes when the journal's very latest record is its own unfinished attempt with
    the same fingerprint: nothing else touched the directory since."""
    latest = journal.latest()
    return (status.step.cls.resumable and latest is not None and latest.get("label") == status.label
            and latest.get("status") in UNFINISHED and latest.get("fingerprint") == fingerprint(status.parts))


MODIFIED = "outputs modified since the checkpoint"


def can_repair(status: StepStatus) -> bool:
    """A resumable step whose own outputs were damaged reruns on top of them: it checks what it finds
    (that is what resumable means), so only the damaged part is redone instead of everything."""
    return (status.step.cls.resumable and status.manifest is not None and status.reason is not None
            and status.reason.startswith(MODIFIED))


def make_plan(steps: list[Step], args: argparse.Namespace, store: CheckpointStore, journal: Journal,
              target: int, force: bool, refresh: bool = False, inputs: InputDigests | None = None) -> Plan:
    """What ``--to steps[target]`` (with ``--force``) would run, and which checkpoint to reset to first."""
    statuses = assess(steps, args, store, journal, refresh, inputs)
    if force and statuses[target].up_to_date:
        statuses[target].reason = "forced (--force)"
    plan = Plan(statuses=statuses, target=target)
    first = next((s for s in statuses[: target + 1] if not s.up_to_date), None)
    if first is None:
        return plan
    plan.to_run = statuses[first.index : target + 1]
    first.resume = can_resume(first, journal)
    first.repair = not first.resume and can_repair(first)
    plan.base = statuses[first.index - 1].manifest if first.index > 0 else _load_base(store)
    return plan


def _load_base(store: CheckpointStore) -> Manifest | None:
    try:
        return store.load(BASE_LABEL)
    except CheckpointError:
        return None
