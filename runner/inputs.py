"""Input files a step reads from outside the run directory, identified by content for staleness.

A step names them with ``BaseCommand.input_files(args)``. Each joins the step's fingerprint as a sha256 of its
bytes, so editing the file in place makes the step stale ("input file changed") while copying or touching it
does not: a spurious rebuild of a production matrix costs hours. Hashing a multi-GB dataset costs seconds, so
digests are remembered in ``.runner/input_digests.json`` under the file's (size, mtime_ns, inode), as git's
index does; a file whose stat changed is hashed again. The cache is a hint only: unreadable means empty.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .fsutil import atomic_write_json, read_state_text

MISSING = "missing"
CACHE_NAME = "input_digests.json"
_BLOCK = 1 << 20


def _stat_key(stat: os.stat_result) -> list[int]:
    return [stat.st_size, stat.st_mtime_ns, stat.st_ino]


def sha256_of(path: Path) -> str:
    """The file's sha256, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


class InputDigests:
    """Content digests of input files, remembered by stat so an unchanged file is not read again."""

    def __init__(self, cache_file: Path | None = None) -> None:
        self.cache_file = cache_file
        self._entries: dict[str, dict] = self._load()
        self._changed = False

    def _load(self) -> dict[str, dict]:
        if self.cache_file is None:
            return {}
        try:
            data = json.loads(read_state_text(self.cache_file))
        except (OSError, ValueError, UnicodeError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, dict) and isinstance(v.get("digest"), str)}

    def digest(self, path: str | Path) -> str:
        """``sha256:<hex>`` of the file's bytes, or ``missing`` when it cannot be read."""
        key = os.path.abspath(path)
        try:
            stat = os.stat(key)
            entry = self._entries.get(key)
            if entry is not None and entry.get("stat") == _stat_key(stat):
                return entry["digest"]
            value = sha256_of(Path(key))
        except OSError:
            return MISSING
        self._entries[key] = {"stat": _stat_key(stat), "digest": value}
        self._changed = True
        return value

    def digests(self, paths: list[str | Path]) -> dict[str, str]:
        """``{path as given: digest}`` for each path."""
        return {str(path): self.digest(path) for path in paths}

    def save(self) -> None:
        """Write the cache (atomically) when something new was hashed; a failure to write is harmless."""
        if self.cache_file is None or not self._changed:
            return
        try:
            atomic_write_json(self.cache_file, self._entries)
        except OSError:
            return
        self._changed = False
