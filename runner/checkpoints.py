"""Snapshot and restore of a run directory in O(files), not O(bytes).

A checkpoint is ``.runner/checkpoints/<label>/`` holding ``files/`` (a hard link to every file of the run
directory, or a copy where the filesystem refuses links) and ``manifest.json`` (path, size, mtime_ns, ctime_ns,
inode, link count, sha256 of small files). Unchanged files take no extra disk.

A hard link shares the inode with the live file, so a file edited *in place* changes the checkpoint too. That is
what ``verify`` catches: size and mtime must match the manifest; a changed ctime is accepted only when the link
count changed with it (a live copy was replaced or removed, which is what write-to-temp + ``os.replace`` does) or
when the sha256 of a small file still matches. The last seen ctime and link count of every checkpointed inode are
kept in ``stamps.json`` and refreshed after the runner's own link operations. A write that restores the mtime
*and* coincides with a link-count change escapes this check; writes that change size or mtime never do.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection

from .crash_points import crash_point
from .fsutil import atomic_write_json

RUNNER_DIR = ".runner"
MANIFEST = "manifest.json"
FILES = "files"
STAMPS = "stamps.json"
SMALL_FILE_HASH_LIMIT = 64 * 1024
BASE_LABEL = "_base"  # content of an adopted, non-empty run directory before the first step


class CheckpointError(Exception):
    """A checkpoint is missing or damaged and must not be restored from."""


def link_file(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst``. Module-level so tests can make it fail and exercise the copy fallback."""
    os.link(src, dst)


def place_file(src: Path, dst: Path) -> str:
    """Link ``src`` to ``dst``, copying when the filesystem refuses links (EXDEV, EPERM, network volumes)."""
    try:
        link_file(src, dst)
        return "link"
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)
        return "copy"


@dataclass
class Tree:
    """The files, directories and symlinks under a root, by posix-style relative path."""

    files: dict[str, os.stat_result] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)
    symlinks: dict[str, str] = field(default_factory=dict)


def scan(root: Path, skip_top: str | None = RUNNER_DIR) -> Tree:
    """List ``root`` without following symlinks; the runner's own folder is skipped at the top level."""
    tree = Tree()
    stack = [("", Path(root))]
    while stack:
        prefix, directory = stack.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                if not prefix and entry.name == skip_top:
                    continue
                rel = prefix + entry.name
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    tree.symlinks[rel] = os.readlink(entry.path)
                elif stat.S_ISDIR(st.st_mode):
                    tree.dirs.add(rel)
                    stack.append((rel + "/", Path(entry.path)))
                elif stat.S_ISREG(st.st_mode):
                    tree.files[rel] = st
    return tree


def sha256_of(path: Path) -> str:
    """Hex sha256 of a (small) file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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
    def total_bytes(self) -> int:
        return sum(entry["size"] for entry in self.files.values())

    @property
    def copies(self) -> int:
        return sum(1 for entry in self.files.values() if entry["mode"] == "copy")

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, "label": self.label, "id": self.id, "created": self.created,
                "files": self.files, "dirs": self.dirs, "symlinks": self.symlinks, "meta": self.meta}

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path) -> Manifest:
        """ValueError unless ``data`` has the shape ``to_json`` writes (a damaged file must not crash planning)."""
        _check_shape(data)
        return cls(label=data["label"], id=data["id"], created=data["created"], files=data["files"],
                   dirs=list(data["dirs"]), symlinks=dict(data["symlinks"]), meta=dict(data["meta"]), path=path)


_STAMPS = ("size", "mtime_ns", "ctime_ns", "inode", "nlink")


def _check_shape(data: Any) -> None:
    """Raise ValueError naming the first field of a manifest that is not what ``Manifest.to_json`` writes."""
    def relative(rel: Any) -> bool:
        return isinstance(rel, str) and bool(rel) and not rel.startswith("/") and ".." not in rel.split("/")

    files, meta = data["files"], data["meta"]
    parts = meta.get("parts", {}) if isinstance(meta, dict) else None
    checks = {
        "label/id": isinstance(data["label"], str) and isinstance(data["id"], str),
        "created": isinstance(data["created"], (int, float)),
        "files": isinstance(files, dict) and all(
            relative(rel) and isinstance(e, dict) and all(type(e.get(k)) is int for k in _STAMPS)
            and e.get("mode") in ("link", "copy") and isinstance(e.get("sha256", ""), str)
            for rel, e in files.items()),
        "dirs": isinstance(data["dirs"], list) and all(relative(d) for d in data["dirs"]),
        "symlinks": isinstance(data["symlinks"], dict) and all(
            relative(k) and isinstance(v, str) for k, v in data["symlinks"].items()),
        "meta": isinstance(parts, dict) and isinstance(parts.get("params", {}), dict)
        and isinstance(parts.get("upstream", []), list)
        and all(isinstance(u, list) and len(u) == 2 for u in parts.get("upstream", [])),
    }
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        raise ValueError(f"malformed {', '.join(bad)}")


def _entry(st: os.stat_result, mode: str, path: Path) -> dict[str, Any]:
    entry = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
             "inode": st.st_ino, "nlink": st.st_nlink, "mode": mode}
    if st.st_size <= SMALL_FILE_HASH_LIMIT:
        entry["sha256"] = sha256_of(path)
    return entry


@dataclass
class RestoreStats:
    """What a restore did: files removed, put back (linked or copied), and left alone."""

    removed: int = 0
    restored: int = 0
    kept: int = 0


def remove_path(path: Path) -> None:
    """Remove a file, symlink or directory tree (never following symlinks)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


class CheckpointStore:
    """The checkpoints of one run directory. Callers hold the run-directory lock for anything that writes."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.root = self.run_dir / RUNNER_DIR / "checkpoints"
        self._stamps: dict[str, list[int]] | None = None

    # ----------------------------------------------------------------- reading
    def labels(self) -> list[str]:
        """Labels that have a checkpoint (finished ones only; temp and trash folders are skipped)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / MANIFEST).is_file() and not p.name.startswith("."))

    def load(self, label: str) -> Manifest | None:
        """The manifest of ``label``, None when there is no checkpoint; CheckpointError when unreadable."""
        path = self.root / label
        try:
            data = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
            return Manifest.from_json(data, path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"checkpoint {label!r}: manifest unreadable ({exc.__class__.__name__})") from exc

    def _load_stamps(self) -> dict[str, list[int]]:
        if self._stamps is None:
            try:
                self._stamps = json.loads((self.root / STAMPS).read_text(encoding="utf-8"))
                if not isinstance(self._stamps, dict):
                    self._stamps = {}
            except (OSError, ValueError):
                self._stamps = {}
        return self._stamps

    def _save_stamps(self) -> None:
        if self._stamps is not None and self.root.is_dir():
            atomic_write_json(self.root / STAMPS, self._stamps, fsync=False, compact=True)

    # ----------------------------------------------------------------- verifying
    def verify(self, manifest: Manifest, refresh: bool = False) -> list[str]:
        """Problems with ``manifest``'s files ("a.txt: modified in place (size 3 -> 5)"); empty when intact.

        ``refresh`` persists accepted stamp changes (link-count moves, touched-but-identical small files).
        """
        stamps = self._load_stamps()
        problems: list[str] = []
        changed = False
        for rel, entry in manifest.files.items():
            path = manifest.files_dir / rel
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                problems.append(f"{rel}: missing from the checkpoint")
                continue
            verdict = self._judge(entry, st, path, stamps.get(str(entry["inode"])))
            if verdict == "refresh":
                stamps[str(st.st_ino)] = [st.st_mtime_ns, st.st_ctime_ns, st.st_nlink]
                changed = True
            elif verdict:
                problems.append(f"{rel}: {verdict}")
        if changed and refresh:
            self._save_stamps()
        return problems

    @staticmethod
    def _judge(entry: dict[str, Any], st: os.stat_result, path: Path, ref: list[int] | None) -> str | None:
        """None if intact, "refresh" if intact with new stamps, else what is wrong."""
        mtime, ctime, nlink = ref or (entry["mtime_ns"], entry["ctime_ns"], entry["nlink"])
        if st.st_ino != entry["inode"] or not stat.S_ISREG(st.st_mode):
            return "replaced inside the checkpoint"
        if st.st_size != entry["size"]:
            return f"modified in place (size {entry['size']} -> {st.st_size})"
        if st.st_mtime_ns == mtime and st.st_ctime_ns == ctime:
            return None
        if entry.get("sha256"):
            return "refresh" if sha256_of(path) == entry["sha256"] else "modified in place (content changed)"
        if st.st_mtime_ns != mtime:
            return "modified in place (mtime changed)"
        if st.st_nlink != nlink:
            return "refresh"
        return "changed in place (ctime moved, link count did not)"

    def _restamp(self, inodes: set[int]) -> None:
        """After the runner's own link/unlink of ``inodes``: accept their new ctime and link count."""
        if not inodes:
            return
        stamps = self._load_stamps()
        changed = False
        for label in self.labels():
            try:
                manifest = self.load(label)
            except CheckpointError:
                continue
            for rel, entry in manifest.files.items():
                if entry["inode"] not in inodes:
                    continue
                try:
                    st = os.lstat(manifest.files_dir / rel)
                except OSError:
                    continue
                ref = stamps.get(str(entry["inode"]))
                mtime = ref[0] if ref else entry["mtime_ns"]
                fresh = [st.st_mtime_ns, st.st_ctime_ns, st.st_nlink]
                ok = st.st_ino == entry["inode"] and st.st_size == entry["size"] and st.st_mtime_ns == mtime
                if ok and ref != fresh:
                    stamps[str(st.st_ino)] = fresh
                    changed = True
        if changed:
            self._save_stamps()

    # ----------------------------------------------------------------- writing
    def snapshot(self, label: str, meta: dict[str, Any]) -> Manifest:
        """Checkpoint the whole run directory under ``label`` (replacing an older one) and return its manifest."""
        tree = scan(self.run_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{label}-{uuid.uuid4().hex[:8]}"
        files_dir = tmp / FILES
        try:
            files_dir.mkdir(parents=True)
            for rel in sorted(tree.dirs, key=len):
                (files_dir / rel).mkdir(parents=True, exist_ok=True)
            entries = {}
            for rel in tree.files:
                dst = files_dir / rel
                mode = place_file(self.run_dir / rel, dst)
                entries[rel] = _entry(os.lstat(dst), mode, dst)
                crash_point("checkpoint-midway")
            manifest = Manifest(label=label, id=uuid.uuid4().hex, created=time.time(), files=entries,
                                dirs=sorted(tree.dirs), symlinks=tree.symlinks, meta=meta, path=self.root / label)
            atomic_write_json(tmp / MANIFEST, manifest.to_json())
            self._install(tmp, label)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        stamps = self._load_stamps()
        for entry in entries.values():
            stamps[str(entry["inode"])] = [entry["mtime_ns"], entry["ctime_ns"], entry["nlink"]]
        self._save_stamps()
        self._restamp({entry["inode"] for entry in entries.values()})
        return manifest

    def _install(self, tmp: Path, label: str) -> None:
        final = self.root / label
        if final.exists():
            trash = self.root / f".trash-{label}-{uuid.uuid4().hex[:8]}"
            os.rename(final, trash)
            os.rename(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, final)

    def delete(self, label: str) -> None:
        """Forget ``label``'s checkpoint (renamed away first, so no half-deleted checkpoint keeps its name)."""
        final = self.root / label
        if not final.exists():
            return
        try:
            inodes = {entry["inode"] for entry in (self.load(label) or _EMPTY).files.values()}
        except CheckpointError:
            inodes = set()
        trash = self.root / f".trash-{label}-{uuid.uuid4().hex[:8]}"
        os.rename(final, trash)
        shutil.rmtree(trash, ignore_errors=True)
        self._restamp(inodes)

    def sweep(self) -> None:
        """Remove what a runner killed mid-snapshot, mid-delete or mid-write left: temp and trash folders (then
        accept the ctime and link count their links moved on checkpointed files: our own link operations) and
        temp files of metadata writes (``.journal.json.<pid>.<n>.tmp``)."""
        inodes: set[int] = set()
        for folder in (self.root, self.run_dir / RUNNER_DIR):
            for path in folder.iterdir() if folder.is_dir() else ():
                if path.name.startswith((".tmp-", ".trash-")) and path.is_dir():
                    inodes |= {st.st_ino for st in scan(path, skip_top=None).files.values()}
                    shutil.rmtree(path, ignore_errors=True)
                elif path.name.startswith(".") and path.name.endswith(".tmp") and path.is_file():
                    path.unlink(missing_ok=True)
        self._restamp(inodes)

    def restore(self, manifest: Manifest | None, keep: Collection[str] = ()) -> RestoreStats:
        """Make the live directory exactly equal ``manifest`` (None: empty). Refuses a damaged checkpoint.

        ``keep``: relative paths of live files to leave as they are (a resumable step's own outputs)."""
        if manifest is not None:
            problems = self.verify(manifest, refresh=True)
            if problems:
                raise CheckpointError(damaged_message(manifest.label, problems))
        target = manifest or _EMPTY
        live = scan(self.run_dir)
        stats = RestoreStats()
        touched: set[int] = set()
        self._remove_extra(live, target, stats, touched, frozenset(keep))
        for rel in sorted(target.dirs, key=len):
            (self.run_dir / rel).mkdir(parents=True, exist_ok=True)
        for rel, entry in target.files.items():
            self._restore_file(rel, entry, live.files.get(rel), target, stats, touched)
        for rel, link_target in target.symlinks.items():
            if live.symlinks.get(rel) != link_target:
                os.symlink(link_target, self.run_dir / rel)
                stats.restored += 1
        self._restamp(touched)
        return stats

    def _remove_extra(self, live: Tree, target: Manifest, stats: RestoreStats, touched: set[int],
                      keep: frozenset[str] = frozenset()) -> None:
        kept_dirs = {str(parent) for rel in keep for parent in Path(rel).parents if str(parent) != "."}
        for rel, st in live.files.items():
            if rel in keep:
                continue
            if rel not in target.files:
                (self.run_dir / rel).unlink()
                touched.add(st.st_ino)
                stats.removed += 1
        for rel, link_target in live.symlinks.items():
            if target.symlinks.get(rel) != link_target:
                (self.run_dir / rel).unlink()
                stats.removed += 1
        wanted = set(target.dirs) | kept_dirs
        for rel in sorted(live.dirs - wanted, key=len, reverse=True):
            path = self.run_dir / rel
            if path.exists():
                remove_path(path)
                stats.removed += 1

    def _restore_file(self, rel: str, entry: dict[str, Any], live_st: os.stat_result | None,
                      target: Manifest, stats: RestoreStats, touched: set[int]) -> None:
        if live_st is not None and _same_file(entry, live_st):
            stats.kept += 1
            return
        dst = self.run_dir / rel
        tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.restore")
        place_file(target.files_dir / rel, tmp)
        os.replace(tmp, dst)
        touched.add(entry["inode"])
        if live_st is not None:
            touched.add(live_st.st_ino)
        stats.restored += 1

    def diff(self, manifest: Manifest | None) -> list[str]:
        """How the live directory differs from ``manifest`` ("+ new.txt", "- gone.txt", "~ changed.txt")."""
        target = manifest or _EMPTY
        live = scan(self.run_dir)
        out = [f"+ {rel}" for rel in sorted(set(live.files) - set(target.files))]
        out += [f"- {rel}" for rel in sorted(set(target.files) - set(live.files))]
        out += [f"~ {rel}" for rel in sorted(set(target.files) & set(live.files))
                if not _same_file(target.files[rel], live.files[rel])]
        out += [f"+ {rel}/" for rel in sorted(live.dirs - set(target.dirs))]
        return out


def _same_file(entry: dict[str, Any], live_st: os.stat_result) -> bool:
    """Is the live file the checkpointed one? Same inode for links; same size and mtime for copies."""
    if entry["mode"] == "link":
        return live_st.st_ino == entry["inode"]
    return live_st.st_size == entry["size"] and live_st.st_mtime_ns == entry["mtime_ns"]


def damaged_message(label: str, problems: list[str]) -> str:
    """One clear sentence about a damaged checkpoint and what to do."""
    shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
    return (f"checkpoint {label!r} is damaged ({shown}); a file was edited in place instead of written to a "
            f"temp file and renamed. Refusing to restore from it: rerun with --to {label} to rebuild it.")


_EMPTY = Manifest(label="(empty)", id="", created=0.0, files={}, dirs=[], symlinks={}, meta={}, path=Path("."))
