"""Small file helpers shared by the runner: every metadata file is written atomically (temp + os.replace)."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

from .crash_points import crash_point

_counter = itertools.count()
FSYNC = True  # flush metadata to disk before the rename; test suites may switch it off for speed


def atomic_write_text(path: Path, text: str, fsync: bool = True) -> None:
    """Write ``text`` to ``path`` so readers see the old content or the new, never a torn file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_counter)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            if fsync and FSYNC:
                handle.flush()
                os.fsync(handle.fileno())
        crash_point(path.stem + "-before-rename")  # journal-before-rename, manifest-..., stamps-...
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_json(path: Path, data: Any, fsync: bool = True, compact: bool = False) -> None:
    """Atomically write ``data`` as key-sorted JSON, indented unless ``compact`` (readable, like dvc.lock)."""
    text = json.dumps(data, separators=(",", ":")) if compact else json.dumps(data, indent=1, sort_keys=True)
    atomic_write_text(path, text + "\n", fsync=fsync)


def human_bytes(n: int | None) -> str:
    """1536 -> '1.5 KB'; None -> '-'."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover - unreachable
