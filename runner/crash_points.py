"""Crash points: named places where the kill-and-resume tests can SIGKILL this process.

A deliberate duplicate of `policyengine_us_data/utils/crash_points.py`: the runner imports nothing from the
domain package, so it carries its own fifteen lines. `MATRIX_CRASH_AT=name` kills the process the first time
it reaches `name`; `name:N` the N-th time (counts per process). Read once at import: unset costs one comparison.
Places: `checkpoint-midway` (after each file placed in a snapshot), `restore-midway` (after each file a reset
removes or puts back), `<stem>-before-rename` in
fsutil.atomic_write_text (`journal-before-rename`, `manifest-before-rename`, `stamps-before-rename`).
"""

from __future__ import annotations

import os
import signal

_NAME, _, _N = (os.environ.get("MATRIX_CRASH_AT") or "").partition(":")
_TARGET = (_NAME, int(_N or 1)) if _NAME else None
_counts: dict[str, int] = {}


def crash_point(name: str) -> None:
    """SIGKILL this process if `MATRIX_CRASH_AT` names this point (and this is the N-th time it is reached)."""
    if _TARGET is None or name != _TARGET[0]:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == _TARGET[1]:
        os.kill(os.getpid(), signal.SIGKILL)
