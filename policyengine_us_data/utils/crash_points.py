"""Crash points: named places where the kill-and-resume tests can SIGKILL this process.

`crash_point(name)` does nothing unless the environment variable `MATRIX_CRASH_AT` was set when this module
was imported. `MATRIX_CRASH_AT=name` kills the process the first time it reaches `name`; `name:N` the N-th
time. Counts are per process (a forked child starts with its parent's counts). The variable is read once at
import, so an unset variable costs one comparison per call. Places: `kernel-simulated` (chunk_kernel.run_chunk,
after simulating, before the shard is written), `atomic-before-rename` (utils.atomic.atomic_path, temp file
written, not yet renamed), `assembly-midway` (csr_stream, after each shard is scattered: `:1` is after the first).
The runner has its own copy (runner/crash_points.py). Used by tests/reliability/test_kill_resume.py.
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
