"""Remembered parameters: a step's output-defining flags stick until you change them.

A user who built with `--chunk-size 500` and later runs `--reset-to dispatch --to assemble`
means the same build, not a rebuild with the default chunk size. So a declared param that is
not given explicitly takes the value remembered for that step; a flag given explicitly always
wins and, when it differs, makes the step stale with that reason. `--forget-params` goes back to
the parser's defaults.

What is remembered (``.runner/params.json``): the values of the step's last success, or, while an
attempt with new values is under way or was interrupted, those new values (a Ctrl-C must not drop
`--package-output`); a step that fails with new values falls back to its last success, so a value
that failed is never reused. A run directory without the file falls back to the checkpoint's values.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from .checkpoints import CheckpointError, CheckpointStore
from .fsutil import atomic_write_json, read_state_text
from .planning import Step, jsonable

MEMORY_NAME = "params.json"


def explicit_dests(parser: argparse.ArgumentParser, args: Sequence[str] | argparse.Namespace) -> set[str]:
    """The dests the caller set: given on the command line, or present on a Namespace."""
    if isinstance(args, argparse.Namespace):
        return set(vars(args))
    saved = [(action, action.default) for action in parser._actions]  # noqa: SLF001
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        return set(vars(parser.parse_args(list(args))))
    finally:
        for action, default in saved:
            action.default = default


class ParamMemory:
    """``{"done": {label: params}, "pending": {label: params}}`` in ``.runner/params.json``.

    ``done`` holds each step's last successful values; ``pending`` the values of an attempt not yet
    finished (running or interrupted). Written only under the run-directory lock, atomically.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.done: dict[str, dict[str, Any]] = {}
        self.pending: dict[str, dict[str, Any]] = {}
        try:
            data = json.loads(read_state_text(self.path))
            self.done = _labelled(data.get("done"))
            self.pending = _labelled(data.get("pending"))
        except (OSError, ValueError, AttributeError, UnicodeError):
            pass  # missing or unreadable: the checkpoints' values stand in (see `values`)

    def values(self, step: Step, store: CheckpointStore) -> dict[str, Any]:
        """What an unset flag of ``step`` takes: pending values, else the last success, else its checkpoint's."""
        if step.label in self.pending:
            return self.pending[step.label]
        if step.label in self.done:
            return self.done[step.label]
        return checkpoint_params(step, store)

    def start(self, planned: dict[str, dict[str, Any]]) -> None:
        """A run begins: every step it plans takes its new values until it fails (a Ctrl-C keeps them)."""
        self.pending.update(planned)
        self._save()

    def finish(self, label: str, status: str, params: dict[str, Any]) -> None:
        """Done: the values become the step's remembered ones. Failed: forgotten. Interrupted: kept pending."""
        if status == "interrupted":
            return
        self.pending.pop(label, None)
        if status == "done":
            self.done[label] = params
        self._save()

    def clear(self) -> None:
        self.done, self.pending = {}, {}
        self.path.unlink(missing_ok=True)

    def _save(self) -> None:
        atomic_write_json(self.path, {"version": 1, "done": self.done, "pending": self.pending})


def _labelled(value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, dict)}


def checkpoint_params(step: Step, store: CheckpointStore) -> dict[str, Any]:
    """The params recorded in the step's checkpoint (the values of its last success), or {}."""
    try:
        manifest = store.load(step.label)
    except CheckpointError:
        manifest = None
    params = manifest.meta.get("parts", {}).get("params") if manifest is not None else None
    return params if isinstance(params, dict) else {}


def remembered_values(steps: list[Step], memory: ParamMemory, store: CheckpointStore) -> dict[str, dict[str, Any]]:
    """label -> the remembered value of each declared param (only those remembered)."""
    out = {}
    for step in steps:
        stored = memory.values(step, store)
        out[step.label] = {dest: stored[dest] for dest in step.cls.params if dest in stored}
    return out


def apply_remembered(ns: argparse.Namespace, explicit: set[str], remembered: dict[str, dict[str, Any]]) -> list[str]:
    """Fill unset declared params from ``remembered``; return "dest=value" for each one used."""
    used = []
    for values in remembered.values():
        for dest, value in values.items():
            if dest in explicit:
                continue
            if value != getattr(ns, dest, None):
                setattr(ns, dest, value)
                used.append(f"{dest}={value!r}")
    return used


def param_changes(ns: argparse.Namespace, explicit: set[str],
                  remembered: dict[str, dict[str, Any]]) -> dict[str, dict[str, list[Any]]]:
    """label -> {dest: [remembered, given]} for each flag given that differs from the remembered value."""
    changes: dict[str, dict[str, list[Any]]] = {}
    for label, values in remembered.items():
        for dest, value in values.items():
            given = jsonable(getattr(ns, dest, None))
            if dest in explicit and given != value:
                changes.setdefault(label, {})[dest] = [value, given]
    return changes
