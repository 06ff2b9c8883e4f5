"""One coordinator per run id: a lease file on the staging volume with a heartbeat.

Two coordinators on one run id would delete and overwrite each other's shards (a volume is shared by
containers on different hosts, so the runner's flock cannot see the other one). The first writes
`{root}/{run_id}/lease.json` (holder, host, pid, container id, heartbeat time), commits it, and keeps
the heartbeat fresh from a thread; a second is refused with `RunLeaseHeld` (exit 3) unless the lease
is stale (no heartbeat for `stale_after` seconds) or its holder is a dead process on this very host.

Every reload/commit of the coordinator goes through one `VolumeSync`, so the heartbeat's write and
commit never overlap a reload (Modal refuses to reload while files on the volume are open).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

from policyengine_us_data.errors import RunLeaseHeld
from policyengine_us_data.utils.atomic import atomic_write_json

LOG = logging.getLogger(__name__)
LEASE_FILE = "lease.json"
DEFAULT_STALE_AFTER_S = 15 * 60.0
DEFAULT_HEARTBEAT_S = 60.0
CONTAINER_ENV = "MODAL_TASK_ID"
# Set by the app's coordinator for the runner it starts: the lease it holds is the runner's too.
INHERITED_LEASE_ENV = "PE_RUN_LEASE_HOLDER"


class VolumeSync:
    """reload()/commit() of a volume handle (none in a local run), one at a time."""

    def __init__(self, volume: Any) -> None:
        self.volume = volume
        self.lock = threading.RLock()

    def reload(self, attempts: int = 3) -> None:
        """Reload; retried briefly, since Modal refuses while another process of the container has a file open."""
        if self.volume is None:
            return
        for attempt in range(attempts):
            try:
                with self.lock:
                    self.volume.reload()
                return
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
                time.sleep(1.0)

    def commit(self) -> None:
        if self.volume is not None:
            with self.lock:
                self.volume.commit()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def me() -> dict[str, Any]:
    """Who holds a lease: host, pid and (in a Modal container) the container id."""
    host, pid = socket.gethostname(), os.getpid()
    return {"holder": f"{host}:{pid}", "host": host, "pid": pid, "container": os.environ.get(CONTAINER_ENV, "")}


class RunLease:
    """The lease of one run id; `acquire()` or raise RunLeaseHeld, `release()` when done."""

    def __init__(
        self,
        run_dir: str | os.PathLike,
        run_id: str,
        sync: VolumeSync,
        *,
        stale_after: float = DEFAULT_STALE_AFTER_S,
        heartbeat: float = DEFAULT_HEARTBEAT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(run_dir) / LEASE_FILE
        self.run_id = run_id
        self.sync = sync
        self.stale_after = float(stale_after)
        self.heartbeat = float(heartbeat)
        self.clock = clock
        self.identity = me()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.inherited = False

    def read(self) -> dict[str, Any] | None:
        """The lease on this process's view of the volume; a damaged one counts as none (logged)."""
        try:
            lease = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            LOG.warning("lease %s is unreadable (%s); treating the run id as free", self.path, exc)
            return None
        return lease if isinstance(lease, dict) else None

    def mine(self, lease: dict[str, Any] | None) -> bool:
        return bool(lease) and all(lease.get(k) == self.identity[k] for k in ("holder", "container"))

    def alive(self, lease: dict[str, Any]) -> bool:
        """A fresh heartbeat from a holder that is not a dead process of this host and container."""
        try:
            age = self.clock() - float(lease.get("heartbeat", 0.0))
        except (TypeError, ValueError):
            return False
        if age > self.stale_after:
            return False
        same_box = lease.get("host") == self.identity["host"] and lease.get("container", "") == self.identity["container"]
        if same_box and isinstance(lease.get("pid"), int):
            return _pid_alive(lease["pid"])
        return True

    def _write(self) -> None:
        now = self.clock()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        atomic_write_json(self.path, {**self.identity, "run_id": self.run_id, "heartbeat": now,
                                      "heartbeat_utc": stamp})

    def acquire(self) -> None:
        """Take the lease, or raise RunLeaseHeld naming the live holder. Re-read after commit: last writer wins."""
        with self.sync.lock:
            self.sync.reload()
            current = self.read()
            parent = os.environ.get(INHERITED_LEASE_ENV)
            if current and parent and current.get("holder") == parent and self.alive(current):
                self.inherited = True  # our coordinator holds it and keeps the heartbeat
                return
            if current and not self.mine(current) and self.alive(current):
                raise RunLeaseHeld(self.run_id, current, self.stale_after)
            if current and not self.mine(current):
                LOG.warning("taking over run id %s from %s (no heartbeat since %s)", self.run_id,
                            current.get("holder"), current.get("heartbeat_utc"))
            self._write()
            self.sync.commit()
            self.sync.reload()
            current = self.read()
            if not self.mine(current):
                raise RunLeaseHeld(self.run_id, current or {}, self.stale_after)
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.run_id}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            with contextlib.suppress(Exception), self.sync.lock:  # a missed beat is retried; never kill the run
                self._write()
                self.sync.commit()

    def release(self) -> None:
        """Stop the heartbeat and remove the lease if it is still ours (an inherited one stays with its holder)."""
        if self.inherited:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self.sync.lock:
            if self.mine(self.read()):
                self.path.unlink(missing_ok=True)
                self.sync.commit()
