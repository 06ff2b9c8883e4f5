"""What the runner wrote: the ledger of its files, and moving aside what is in their way.

A file in the run directory is the runner's when the ledger (``.runner/owned.json``) or a checkpoint records it
at that path with the same (inode, size, mtime), or with the same content. Everything else (a user's notes, a
dataset copied in, a file swapped over an output, what was there before the runner came) is the user's: the
runner never removes or overwrites it. When such a file sits where the runner must put one of its own, it is
moved to ``moved-aside/<time>/<path>`` and the run says where.

Intents make the runner's multi-file changes crash-safe: ``attempt.json`` (written before a step runs: the
stats before it and the paths it declared) lets the next start claim what a killed step wrote;
``reset.json`` (written before a restore) makes the next start finish that restore before anything else.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .checkpoints import RUNNER_DIR, CheckpointStore, Tree, scan
from .fsutil import atomic_write_json, read_state_text, stat_key

LEDGER = "owned.json"
ATTEMPT = "attempt.json"
RESET = "reset.json"
ASIDE = "moved-aside"


def read_state_json(path: Path) -> Any:
    """A runner JSON file, or None when absent or unreadable (these files are hints or intents)."""
    try:
        return json.loads(read_state_text(path))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeError):
        return None


def under(rel: str, outputs: tuple[str, ...]) -> bool:
    """Is ``rel`` one of ``outputs`` or inside one of them? No outputs declared: every path is."""
    if not outputs:
        return True
    return any(rel == out.rstrip("/") or rel.startswith(out.rstrip("/") + "/") for out in outputs)


class Ownership:
    """The ledger of runner-written files of one run directory, checked against the live directory."""

    def __init__(self, run_dir: Path, store: CheckpointStore) -> None:
        self.run_dir = Path(run_dir)
        self.hidden = self.run_dir / RUNNER_DIR
        self.store = store
        data = read_state_json(self.hidden / LEDGER)
        self.files: dict[str, dict[str, Any]] = {
            rel: e for rel, e in (data.items() if isinstance(data, dict) else ())
            if isinstance(e, dict) and isinstance(e.get("key"), list)}
        self._entries: dict[str, list[dict[str, Any]]] | None = None

    def save(self) -> None:
        atomic_write_json(self.hidden / LEDGER, self.files, compact=True)

    def _known(self, rel: str) -> list[dict[str, Any]]:
        """Every record of a runner file at ``rel``: the ledger's and each checkpoint's."""
        if self._entries is None:
            self._entries = {}
            for manifest in self.store.manifests():
                for path, entry in manifest.files.items():
                    self._entries.setdefault(path, []).append(entry)
        out = list(self._entries.get(rel, []))
        if rel in self.files:
            key = self.files[rel]["key"]
            out.append({"inode": key[0], "size": key[1], "mtime_ns": key[2], "hash": self.files[rel].get("hash", "")})
        return out

    def owns(self, rel: str, st: os.stat_result) -> bool:
        """Did the runner write the live file at ``rel``? By stats first, by content when they moved."""
        return any(self.store.same_content(self.run_dir / rel, st, entry) for entry in self._known(rel))

    def claim(self, tree: Tree, rels: list[str] | set[str]) -> None:
        """Record the live files ``rels`` as written by the runner."""
        for rel in rels:
            if rel in tree.files:
                self.files[rel] = {"key": stat_key(tree.files[rel])}
        self._entries = None

    def forget_missing(self) -> None:
        """Drop ledger entries whose file is gone or is no longer the runner's."""
        for rel in list(self.files):
            try:
                st = os.lstat(self.run_dir / rel)
            except OSError:
                del self.files[rel]
                continue
            if not self.owns(rel, st):
                del self.files[rel]

    def dirs(self) -> set[str]:
        """Folders holding runner files (may be removed once empty)."""
        return {str(p) for rel in self.files for p in Path(rel).parents if str(p) != "."}

    def move_aside(self, rel: str) -> Path:
        """Move the user's ``rel`` out of the runner's way to ``moved-aside/<time>/<rel>``; return where."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dest = self.run_dir / ASIDE / stamp / rel
        n = 1
        while os.path.lexists(dest):
            n += 1
            dest = self.run_dir / ASIDE / f"{stamp}-{n}" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(self.run_dir / rel, dest)
        return dest

    def strangers(self, outputs: tuple[str, ...]) -> list[str]:
        """Live files under the declared ``outputs`` that the runner did not write."""
        if not outputs:
            return []
        tree = scan(self.run_dir)
        found = [rel for rel, st in tree.files.items() if under(rel, outputs) and not self.owns(rel, st)]
        found += [rel for rel in tree.symlinks if under(rel, outputs)]
        return sorted(found)


def written(before: dict[str, list[int]], after: Tree, outputs: tuple[str, ...]) -> set[str]:
    """Files new or changed since ``before`` (rel -> stat key) inside ``outputs``: what a step wrote."""
    return {rel for rel, st in after.files.items()
            if under(rel, outputs) and before.get(rel) != stat_key(st)}


def stat_keys(tree: Tree) -> dict[str, list[int]]:
    return {rel: stat_key(st) for rel, st in tree.files.items()}
