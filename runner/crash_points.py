"""Crash points: named places where the kill-and-resume tests can SIGKILL this process.

The runner's own, generic switch (it imports nothing from, and knows no names of, the project that uses it):
`RUNNER_CRASH_AT=name` kills the process the first time it reaches `name`; `name:N` the N-th time (counts per
process). A project's own crash points read their own variable. Read once at import: unset costs one comparison.
Places: `checkpoint-midway` (after each file placed in a snapshot), `restore-midway` (after each file a reset
removes or puts back), `<stem>-before-rename` in
fsutil.atomic_write_text (`journal-before-rename`, `manifest-before-rename`, `stamps-before-rename`).
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "RUNNER_CRASH_AT"
_NAME, _, _N = (os.environ.get(ENV_VAR) or "").partition(":")
_TARGET = (_NAME, int(_N or 1)) if _NAME else None
_counts: dict[str, int] = {}


def crash_point(name: str) -> None:
    """SIGKILL this process if `RUNNER_CRASH_AT` names this point (and this is the N-th time it is reached)."""
    if _TARGET is None or name != _TARGET[0]:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == _TARGET[1]:
        os.kill(os.getpid(), signal.SIGKILL)
