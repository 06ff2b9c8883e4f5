"""Snapshot and restore of the files the runner wrote, in O(files), not O(bytes).

A checkpoint is ``.runner/checkpoints/<label>/`` holding ``files/`` (a hard link to every runner-written file of
the run directory, or a copy where the filesystem refuses links) and ``manifest.json``: per file its size,
mtime_ns, inode, a content hash (xxh3) and the step that wrote it (``by``). Files the runner did not write are
never in a checkpoint, and a restore never removes or overwrites them (see ownership.py).

A hard link shares the inode with the live file, so a file edited *in place* changes the checkpoint too. A file
whose (inode, size, mtime) still match is taken as intact without reading it; when they moved (``touch``,
``cp -a``, a move to another filesystem), the content hash decides, so metadata-only changes never invalidate a
checkpoint. Verified stats are remembered in ``stamps.json`` so the next check is stat-only again.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Iterable

from .crash_points import crash_point
from .fsutil import atomic_write_json, content_hash, read_state_text, stat_key
from .manifest import FILES, Manifest

RUNNER_DIR = ".runner"
MANIFEST = "manifest.json"
STAMPS = "stamps.json"


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


@dataclass
class RestoreStats:
    """What a restore did: files removed, put back (linked or copied), left alone, and moved aside."""

    removed: int = 0
    restored: int = 0
    kept: int = 0
    moved: list[str] = field(default_factory=list)


Owns = Callable[[str, os.stat_result], bool]
MoveAside = Callable[[str], Path]


class CheckpointStore:
    """The checkpoints of one run directory. Callers hold the run-directory lock for anything that writes."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.root = self.run_dir / RUNNER_DIR / "checkpoints"
        self._stamps: dict[str, str] | None = None
        self._stamps_changed = False

    # ----------------------------------------------------------------- reading
    def labels(self) -> list[str]:
        """Labels that have a checkpoint (finished ones only; temp and trash folders are skipped)."""
        if not self.root.is_dir() or self.root.is_symlink():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / MANIFEST).is_file() and not p.name.startswith("."))

    def load(self, label: str) -> Manifest | None:
        """The manifest of ``label``, None when there is no checkpoint; CheckpointError when unreadable."""
        path = self.root / label
        try:
            data = json.loads(read_state_text(path / MANIFEST))
            return Manifest.from_json(data, path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"checkpoint {label!r}: manifest unreadable ({exc.__class__.__name__})") from exc

    def manifests(self) -> list[Manifest]:
        """Every readable checkpoint's manifest (damaged ones are skipped)."""
        out = []
        for label in self.labels():
            try:
                manifest = self.load(label)
            except CheckpointError:
                continue
            if manifest is not None:
                out.append(manifest)
        return out

    def _load_stamps(self) -> dict[str, str]:
        if self._stamps is None:
            try:
                data = json.loads(read_state_text(self.root / STAMPS))
                self._stamps = {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}
            except (OSError, ValueError, UnicodeError):
                self._stamps = {}
        return self._stamps

    def save_stamps(self) -> None:
        """Persist the content hashes learned for new stats (a hint: losing it costs only a re-hash)."""
        if self._stamps_changed and self._stamps is not None and self.root.is_dir():
            atomic_write_json(self.root / STAMPS, self._stamps, fsync=False, compact=True)
            self._stamps_changed = False

    # ----------------------------------------------------------------- content
    def same_content(self, path: Path, st: os.stat_result, entry: dict[str, Any]) -> bool:
        """Does the file at ``path`` (stat ``st``) hold ``entry``'s bytes? Stat-only when its stats match
        the entry or a stat seen before; reads the file only when they moved."""
        if not stat.S_ISREG(st.st_mode) or st.st_size != entry["size"]:
            return False
        key = stat_key(st)
        if key == [entry["inode"], entry["size"], entry["mtime_ns"]]:
            return True
        stamps = self._load_stamps()
        known = stamps.get(json.dumps(key))
        if known is None:
            try:
                known = content_hash(path)
            except OSError:
                return False
            stamps[json.dumps(key)] = known
            self._stamps_changed = True
        return known == entry["hash"]

    # ----------------------------------------------------------------- verifying
    def verify(self, manifest: Manifest, refresh: bool = False) -> list[str]:
        """Problems with ``manifest``'s own copies ("a.txt: modified in place"); empty when intact."""
        problems: list[str] = []
        for rel, entry in manifest.files.items():
            path = manifest.files_dir / rel
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                problems.append(f"{rel}: missing from the checkpoint")
                continue
            if not self.same_content(path, st, entry):
                problems.append(f"{rel}: modified in place")
        if refresh:
            self.save_stamps()
        return problems

    def live_problems(self, manifest: Manifest, rels: Iterable[str]) -> list[str]:
        """How the live files ``rels`` of ``manifest`` differ from it ("output missing: matrix/X.npz")."""
        problems = []
        for rel in rels:
            try:
                st = os.lstat(self.run_dir / rel)
            except (FileNotFoundError, NotADirectoryError):
                problems.append(f"output missing: {rel}")
                continue
            if not self.same_content(self.run_dir / rel, st, manifest.files[rel]):
                problems.append(f"output changed: {rel}")
        return problems

    # ----------------------------------------------------------------- writing
    def snapshot(self, label: str, meta: dict[str, Any], owners: dict[str, str] | None = None,
                 known: Manifest | None = None) -> Manifest:
        """Checkpoint the live files ``owners`` names (rel -> the step that wrote it; None: every file, by
        ``label``) under ``label``, replacing an older one. Hashes only files ``known`` does not describe."""
        tree = scan(self.run_dir)
        owners = owners if owners is not None else {rel: label for rel in tree.files}
        files = {rel: st for rel, st in tree.files.items() if rel in owners}
        dirs = sorted({str(p) for rel in files for p in Path(rel).parents if str(p) != "."})
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{label}-{uuid.uuid4().hex[:8]}"
        try:
            for rel in [""] + dirs:
                (tmp / FILES / rel).mkdir(parents=True, exist_ok=True)
            entries = {}
            for rel, st in files.items():
                mode = place_file(self.run_dir / rel, tmp / FILES / rel)
                entries[rel] = self._entry(rel, os.lstat(tmp / FILES / rel), mode, tmp / FILES / rel, known)
                entries[rel]["by"] = owners[rel]
                crash_point("checkpoint-midway")
            manifest = Manifest(label=label, id=uuid.uuid4().hex, created=time.time(), files=entries,
                                dirs=dirs, symlinks={}, meta=meta, path=self.root / label)
            atomic_write_json(tmp / MANIFEST, manifest.to_json())
            self._install(tmp, label)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.save_stamps()
        return manifest

    def _entry(self, rel: str, st: os.stat_result, mode: str, path: Path, known: Manifest | None) -> dict[str, Any]:
        entry: dict[str, Any] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino, "mode": mode}
        old = known.files.get(rel) if known else None
        if old is not None and [old["inode"], old["size"], old["mtime_ns"]] == stat_key(st):
            entry["hash"] = old["hash"]
        else:
            key = json.dumps(stat_key(st))
            entry["hash"] = self._load_stamps().get(key) or content_hash(path)
        return entry

    def derive(self, source: Manifest, label: str, rels: Collection[str], id_: str, meta: dict[str, Any]) -> None:
        """Rebuild ``label``'s checkpoint from the files ``rels`` of ``source`` (same id and meta as before)."""
        tmp = self.root / f".tmp-{label}-{uuid.uuid4().hex[:8]}"
        try:
            entries = {}
            for rel in rels:
                (tmp / FILES / rel).parent.mkdir(parents=True, exist_ok=True)
                mode = place_file(source.files_dir / rel, tmp / FILES / rel)
                entries[rel] = dict(source.files[rel], mode=mode)
            dirs = sorted({str(p) for rel in entries for p in Path(rel).parents if str(p) != "."})
            (tmp / FILES).mkdir(parents=True, exist_ok=True)
            manifest = Manifest(label, id_, time.time(), entries, dirs, {}, meta, self.root / label)
            atomic_write_json(tmp / MANIFEST, manifest.to_json())
            self._install(tmp, label)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

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
        trash = self.root / f".trash-{label}-{uuid.uuid4().hex[:8]}"
        os.rename(final, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def sweep(self) -> None:
        """Remove what a runner killed mid-snapshot, mid-delete or mid-write left: temp and trash folders and
        temp files of metadata writes (``.journal.json.<pid>.<n>.tmp``)."""
        for folder in (self.root, self.run_dir / RUNNER_DIR):
            for path in folder.iterdir() if folder.is_dir() else ():
                if path.name.startswith((".tmp-", ".trash-")) and path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                elif path.name.startswith(".") and path.name.endswith(".tmp") and path.is_file():
                    path.unlink(missing_ok=True)

    def restore(self, manifest: Manifest | None, owns: Owns, aside: MoveAside,
                keep: Collection[str] = (), dirs: Collection[str] = ()) -> RestoreStats:
        """Make the runner's files in the live directory equal ``manifest`` (None: none). Only files ``owns``
        accepts are removed or replaced; another file in a restored file's way is moved ``aside``; every
        other file stays. Idempotent, so an interrupted restore is finished by running it again.
        ``keep``: live files to leave as they are (a resumable step's own outputs); ``dirs``: folders besides
        the checkpoints' own that the runner made and may remove once empty."""
        if manifest is not None:
            problems = self.verify(manifest, refresh=True)
            if problems:
                raise CheckpointError(damaged_message(manifest.label, problems))
        target = manifest or _EMPTY
        live = scan(self.run_dir)
        stats = RestoreStats()
        for rel, st in live.files.items():
            if rel not in target.files and rel not in keep and owns(rel, st):
                (self.run_dir / rel).unlink()
                stats.removed += 1
                crash_point("restore-midway")
        for rel, entry in target.files.items():
            self._restore_file(rel, entry, live.files.get(rel), target, stats, owns, aside)
            crash_point("restore-midway")
        self._prune_dirs(live, target, set(dirs))
        self.save_stamps()
        return stats

    def _restore_file(self, rel: str, entry: dict[str, Any], live_st: os.stat_result | None, target: Manifest,
                      stats: RestoreStats, owns: Owns, aside: MoveAside) -> None:
        dst = self.run_dir / rel
        if live_st is None and os.path.lexists(dst):  # a directory or symlink the user put in the way
            stats.moved.append(str(aside(rel)))
        elif live_st is not None and self.same_content(dst, live_st, entry):
            stats.kept += 1
            return
        elif live_st is not None and not owns(rel, live_st):
            stats.moved.append(str(aside(rel)))
        for parent in reversed(Path(rel).parents):
            if str(parent) != "." and (os.path.islink(self.run_dir / parent) or (self.run_dir / parent).is_file()):
                stats.moved.append(str(aside(str(parent))))
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.restore")
        place_file(target.files_dir / rel, tmp)
        os.replace(tmp, dst)
        stats.restored += 1

    def _prune_dirs(self, live: Tree, target: Manifest, ours: set[str]) -> None:
        """Remove directories left empty that the runner made (never a user's folder)."""
        ours |= {d for m in self.manifests() for d in m.dirs}
        for rel in sorted(live.dirs - set(target.dirs), key=len, reverse=True):
            if rel in ours:
                try:
                    os.rmdir(self.run_dir / rel)
                except OSError:
                    pass  # not empty: something the runner did not write is inside

    def diff(self, manifest: Manifest | None) -> list[str]:
        """How the live runner files differ from ``manifest`` ("- gone.txt", "~ changed.txt")."""
        target = manifest or _EMPTY
        problems = self.live_problems(target, target.files)
        return [("- " if p.startswith("output missing") else "~ ") + p.split(": ", 1)[1] for p in problems]


def damaged_message(label: str, problems: list[str]) -> str:
    """One clear sentence about a damaged checkpoint and what to do."""
    shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
    return (f"checkpoint {label!r} is damaged ({shown}); a file was edited in place instead of written to a "
            f"temp file and renamed. Refusing to restore from it: rerun with --to {label} to rebuild it.")


_EMPTY = Manifest(label="(empty)", id="", created=0.0, files={}, dirs=[], symlinks={}, meta={}, path=Path("."))
