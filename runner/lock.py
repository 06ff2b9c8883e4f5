"""One runner per run directory: an ``fcntl.flock`` on ``.runner/lock``.

The kernel drops the lock when the holder exits for any reason, SIGKILL included, so a stale lock never needs
manual cleanup. The holder writes its pid, host and start time into the lock file so a refused runner can say
who holds it. (That one small file is written in place: the lock lives on its inode, and its text is advisory.)
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from .fsutil import open_nofollow


class RunDirLocked(Exception):
    """Another process holds the run directory. The message names its pid and host."""

    def __init__(self, run_dir: Path, holder: dict) -> None:
        self.run_dir = run_dir
        self.holder = holder
        pid = holder.get("pid", "?")
        host = holder.get("host", "?")
        since = holder.get("since")
        when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(since)) if since else ""
        super().__init__(f"run directory {run_dir} is in use by another runner: pid {pid} on host {host}{when}")


class RunDirLock:
    """Context manager: ``with RunDirLock(run_dir / ".runner" / "lock", run_dir): ...``."""

    def __init__(self, path: Path, run_dir: Path | None = None) -> None:
        self.path = Path(path)
        self.run_dir = Path(run_dir) if run_dir else self.path.parent.parent
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock at once or raise RunDirLocked; never waits."""
        fd = open_nofollow(self.path, os.O_RDWR | os.O_CREAT)  # a symlink here is refused, never truncated
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunDirLocked(self.run_dir, holder) from None
        except BaseException:
            os.close(fd)
            raise
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the file stays; its text is stale but harmless)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunDirLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _read_holder(fd: int) -> dict:
    """The holder's pid/host as written in the lock file; placeholders if it has not written them yet."""
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def live_holder(path: Path) -> dict | None:
    """The holder (pid, host, since) when a runner holds the lock at ``path`` now, else None.

    For ``--status``: probes with a shared, non-blocking flock, released at once, on a file opened read-only
    (nothing is created). A build starting in that same instant would see the lock taken and exit 3.
    """
    try:
        fd = open_nofollow(Path(path), os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
