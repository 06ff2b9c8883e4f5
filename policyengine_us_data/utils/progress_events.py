"""Progress as events: one small dict per phase and per finished chunk, for whoever listens.

A person at a terminal gets tqdm's bar and log lines; a script gets the same facts as data: a Python
caller through a listener (`build_matrix_runner(run_dir, on_progress=...)`), a shell script through
`--progress json` (one JSON object per line on stderr). Events are plain dicts with an `"event"` key:

  {"event": "phase", "phase": "warm-up", "status": "start"|"done", "message": ..., "seconds": ...}
  {"event": "chunk", "chunk_id", "done", "total", "columns_done", "columns_total", "seconds", "elapsed_s", "eta_s"}
  {"event": "step", "label", "status": "running"|"done"|"failed"|"interrupted", ...}   (from the runner)

Every event also carries `"time"` (epoch seconds). Standard library only, so importing it costs nothing.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable, TextIO

LOG = logging.getLogger(__name__)
Listener = Callable[[dict[str, Any]], None]
_listeners: list[Listener] = []
_bar = {"wanted": True}


def add_listener(listener: Listener) -> Callable[[], None]:
    """Send every event to `listener` until the returned function is called."""
    _listeners.append(listener)

    def remove() -> None:
        if listener in _listeners:
            _listeners.remove(listener)

    return remove


def emit(event: dict[str, Any]) -> None:
    """Pass `event` (stamped with the time) to every listener; a listener's error never stops the build."""
    event = {**event, "time": round(time.time(), 3)}
    for listener in list(_listeners):
        try:
            listener(event)
        except Exception:  # noqa: BLE001 - a broken display must not fail a build
            LOG.debug("progress listener %r failed", listener, exc_info=True)


def phase(name: str, status: str, message: str, **fields: Any) -> None:
    """Announce a phase on one log line (before a slow import, say) and as an event."""
    LOG.info("%s", message)
    emit({"event": "phase", "phase": name, "status": status, "message": message, **fields})


def json_lines(stream: TextIO) -> Listener:
    """A listener writing each event as one JSON line to `stream`, flushed at once."""

    def write(event: dict[str, Any]) -> None:
        stream.write(json.dumps(event, default=str) + "\n")
        stream.flush()

    return write


def want_bar(wanted: bool) -> None:
    """`--progress json` turns the terminal bar off, so it does not mix with the JSON lines."""
    _bar["wanted"] = wanted


def bar_wanted() -> bool:
    return _bar["wanted"]
