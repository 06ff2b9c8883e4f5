"""A checkpoint's manifest: what it holds (per file: size, mtime_ns, inode, content hash, the step that wrote it)
and the step's fingerprint. Read back from disk, so its shape is checked before anything trusts it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FILES = "files"


@dataclass
class Manifest:
    """What a checkpoint holds and the stamps it was taken with; ``meta`` carries the step's fingerprint."""

    label: str
    id: str
    created: float
    files: dict[str, dict[str, Any]]
    dirs: list[str]
    symlinks: dict[str, str]
    meta: dict[str, Any]
    path: Path

    @property
    def files_dir(self) -> Path:
        return self.path / FILES

    @property
    def copies(self) -> int:
        return sum(1 for entry in self.files.values() if entry["mode"] == "copy")

    @property
    def content_id(self) -> str:
        """A digest of what the checkpoint holds (paths and content hashes): equal bytes, equal id."""
        text = json.dumps(sorted((rel, e["hash"]) for rel, e in self.files.items()))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def own_files(self) -> list[str]:
        """Files this checkpoint's own step wrote (the rest came from earlier steps)."""
        return sorted(rel for rel, entry in self.files.items() if entry.get("by") == self.label)

    def to_json(self) -> dict[str, Any]:
        return {"version": 2, "label": self.label, "id": self.id, "created": self.created,
                "files": self.files, "dirs": self.dirs, "symlinks": self.symlinks, "meta": self.meta}

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path) -> Manifest:
        """ValueError unless ``data`` has the shape ``to_json`` writes (a damaged file must not crash planning)."""
        _check_shape(data)
        return cls(label=data["label"], id=data["id"], created=data["created"], files=data["files"],
                   dirs=list(data["dirs"]), symlinks=dict(data["symlinks"]), meta=dict(data["meta"]), path=path)


_STAMPS = ("size", "mtime_ns", "inode")


def _relative(rel: Any) -> bool:
    return isinstance(rel, str) and bool(rel) and not rel.startswith("/") and ".." not in rel.split("/")


def _check_shape(data: Any) -> None:
    """Raise ValueError naming the first field of a manifest that is not what ``Manifest.to_json`` writes."""
    if not isinstance(data, dict) or data.get("version") != 2:
        raise ValueError("not a version-2 manifest")
    files, meta = data["files"], data["meta"]
    parts = meta.get("parts", {}) if isinstance(meta, dict) else None
    checks = {
        "label/id": isinstance(data["label"], str) and isinstance(data["id"], str),
        "created": isinstance(data["created"], (int, float)),
        "files": isinstance(files, dict) and all(
            _relative(rel) and isinstance(e, dict) and all(type(e.get(k)) is int for k in _STAMPS)
            and e.get("mode") in ("link", "copy") and isinstance(e.get("hash"), str)
            and isinstance(e.get("by"), str) for rel, e in files.items()),
        "dirs": isinstance(data["dirs"], list) and all(_relative(d) for d in data["dirs"]),
        "symlinks": isinstance(data["symlinks"], dict) and all(
            _relative(k) and isinstance(v, str) for k, v in data["symlinks"].items()),
        "meta": isinstance(parts, dict) and isinstance(parts.get("params", {}), dict)
        and isinstance(parts.get("upstream", []), list) and isinstance(parts.get("code", {}), (dict, str))
        and all(isinstance(u, list) and len(u) == 2 for u in parts.get("upstream", [])),
    }
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        raise ValueError(f"malformed {', '.join(bad)}")


