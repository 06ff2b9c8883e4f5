"""Remembered parameters: a step's output-defining flags stick until you change them.

A user who built with `--chunk-size 500` and later runs `--reset-to dispatch --to assemble`
means the same build, not a rebuild with the default chunk size. So a declared param that is
not given explicitly takes the value recorded for that step's last attempt (its checkpoint,
else the journal); a flag given explicitly always wins and, when it differs, makes the step stale
with that reason. `--forget-params` goes back to the parser's defaults.
"""

from __future__ import annotations

import argparse
from typing import Any, Sequence

from .checkpoints import CheckpointError, CheckpointStore
from .journal import Journal
from .planning import Step


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


def remembered(step: Step, store: CheckpointStore, journal: Journal) -> dict[str, Any]:
    """The params recorded for the step's checkpoint, else for its latest journal attempt."""
    try:
        manifest = store.load(step.label)
    except CheckpointError:
        manifest = None
    if manifest is not None:
        params = manifest.meta.get("parts", {}).get("params")
        if isinstance(params, dict):
            return params
    record = journal.last(step.label) or {}
    params = (record.get("parts") or {}).get("params")
    return params if isinstance(params, dict) else {}


def apply_remembered(ns: argparse.Namespace, explicit: set[str], steps: list[Step], store: CheckpointStore,
                     journal: Journal) -> list[str]:
    """Fill unset declared params from each step's last attempt; return "dest=value" for each one used."""
    used = []
    for step in steps:
        stored = remembered(step, store, journal)
        for dest in step.cls.params:
            if dest in explicit or dest not in stored:
                continue
            if stored[dest] != getattr(ns, dest, None):
                setattr(ns, dest, stored[dest])
                used.append(f"{dest}={stored[dest]!r}")
    return used
