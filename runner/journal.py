"""The journal: a durable, human-readable record of every step attempt (``.runner/journal.json``).

Each attempt is a record: label, status (running, done, failed, interrupted), fingerprint and its parts, start,
end, duration, peak RSS, files and bytes written, checkpoint id, error. Besides attempts the journal holds notes
(status ``forgotten``) for checkpoints the runner dropped, with the reason, so ``--status`` can say why.

The file is rewritten atomically (temp + ``os.replace``) on every change. An unreadable journal is treated as
empty, with a warning; on the next write the unreadable file is kept aside as ``journal.json.corrupt-<time>``.
Checkpoint manifests, not the journal, decide what is up to date, so losing the journal loses only history.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from .fsutil import atomic_write_json, read_state_text

_NUMBER = (int, float)
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "label": (str,), "status": (str,), "reason": (str,), "fingerprint": (str,), "error": (str,),
    "checkpoint": (str,), "host": (str,), "parts": (dict,), "start": _NUMBER, "end": _NUMBER,
    "duration_s": _NUMBER, "pid": (int,), "peak_rss_bytes": (int,), "files_written": (int,),
    "bytes_written": (int,),
}


def _check_record(record: dict[str, Any]) -> None:
    """ValueError naming the first field of a record whose type is not what the runner writes."""
    for name, types in _FIELD_TYPES.items():
        value = record.get(name)
        if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
            raise ValueError(f"record field {name!r} is a {type(value).__name__}")
    if not isinstance(record.get("label"), str) or record.get("status") not in (*ATTEMPT_STATUSES, *NOTES):
        raise ValueError("a record has no label or an unknown status")

ATTEMPT_STATUSES = ("running", "done", "failed", "interrupted")
UNFINISHED = ("running", "failed", "interrupted")
NOTES = ("forgotten", "reset", "adopted")


class Journal:
    """Step records of one run directory. Writers hold the run-directory lock."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.warning: str | None = None
        self._corrupt = False
        self._records: list[dict[str, Any]] = self._read()

    def _read(self) -> list[dict[str, Any]]:
        try:
            text = read_state_text(self.path)
        except FileNotFoundError:
            return []
        except (OSError, UnicodeError) as exc:  # a symlink, or not UTF-8: garbage, read as empty history like bad JSON
            return self._unreadable(f"{exc.__class__.__name__}: {str(exc)[:80]}")
        try:
            data = json.loads(text)
            records = data["records"]
            if not isinstance(records, list) or not all(isinstance(r, dict) and "label" in r for r in records):
                raise ValueError("records is not a list of step records")
            for record in records:
                _check_record(record)
            return records
        except (ValueError, KeyError, TypeError) as exc:
            return self._unreadable(f"{exc.__class__.__name__}: {str(exc)[:80]}")

    def _unreadable(self, why: str) -> list[dict[str, Any]]:
        self._corrupt = True
        self.warning = (f"journal {self.path} is unreadable ({why}); treating the history as empty "
                        f"(checkpoints still decide what is up to date)")
        return []

    @property
    def records(self) -> list[dict[str, Any]]:
        """All records, oldest first (read-only view by convention)."""
        return self._records

    def _write(self) -> None:
        if self._corrupt and self.path.exists():
            os.replace(self.path, self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}"))
            self._corrupt = False
        atomic_write_json(self.path, {"version": 1, "records": self._records})

    def start(self, label: str, fingerprint: str, parts: dict[str, Any], reason: str) -> dict[str, Any]:
        """Record that ``label`` starts now; returns the record to pass to ``finish``."""
        record = {"label": label, "status": "running", "fingerprint": fingerprint, "parts": parts,
                  "reason": reason, "start": time.time(), "end": None, "duration_s": None, "pid": os.getpid(),
                  "host": socket.gethostname(), "peak_rss_bytes": None, "files_written": None,
                  "bytes_written": None, "checkpoint": None, "error": None}
        self._records.append(record)
        self._write()
        return record

    def finish(self, record: dict[str, Any], status: str, **fields: Any) -> None:
        """Close ``record`` with ``status`` (done, failed, interrupted) and any measured fields."""
        if status not in ATTEMPT_STATUSES[1:]:
            raise ValueError(f"unknown final status {status!r}")
        record["status"] = status
        record["end"] = time.time()
        record["duration_s"] = round(record["end"] - record["start"], 3)
        record.update(fields)
        self._write()

    def note(self, label: str, status: str, reason: str) -> None:
        """Record a runner action on ``label``: ``forgotten`` (checkpoint dropped, and why) or ``reset``."""
        self._records.append({"label": label, "status": status, "reason": reason, "start": time.time()})
        self._write()

    def last(self, label: str) -> dict[str, Any] | None:
        """The latest record (attempt or note) for ``label``."""
        for record in reversed(self._records):
            if record.get("label") == label:
                return record
        return None

    def last_done(self, label: str) -> dict[str, Any] | None:
        """The latest successful attempt of ``label`` (for finished time, duration, output size)."""
        for record in reversed(self._records):
            if record.get("label") == label and record.get("status") == "done":
                return record
        return None

    def latest(self) -> dict[str, Any] | None:
        """The latest record of any step: a resumable step resumes only if its failed attempt is this one."""
        return self._records[-1] if self._records else None
