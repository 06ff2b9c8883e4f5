"""Small file helpers shared by the runner: metadata written atomically (temp + os.replace) and read without
following symlinks, content hashes of outputs, and printing that never fails on an undecodable path."""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import os
import stat
from pathlib import Path
from typing import Any

from .crash_points import crash_point

try:  # xxh3 hashes outputs ~10x faster than sha256; the runner still works without the package
    from xxhash import xxh3_128 as _xxh3
except ImportError:  # pragma: no cover - exercised only where xxhash is not installed
    _xxh3 = None

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


class UnsafeStateFile(OSError):
    """A file in the runner's folder is a symlink or not a regular file: the runner will not follow it."""


def _refuse(path: Path, what: str) -> UnsafeStateFile:
    return UnsafeStateFile(f"{path} is {what}; the runner does not follow links in its own folder. "
                           f"Remove it (the runner recreates what it needs) and rerun")


def open_nofollow(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that refuses a symlink (O_NOFOLLOW) or anything but a regular file at ``path``."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0), mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP or os.path.islink(path):
            raise _refuse(Path(path), "a symbolic link") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _refuse(Path(path), "not a regular file")
    return fd


def read_state_text(path: Path) -> str:
    """Read one of the runner's own files without following a symlink (FileNotFoundError when absent)."""
    fd = open_nofollow(Path(path), os.O_RDONLY)
    with os.fdopen(fd, "rb") as handle:
        return handle.read().decode("utf-8")


def check_state_dir(path: Path) -> None:
    """The runner's folder (or one inside it) must be a real directory, never a symlink."""
    if os.path.islink(path):
        raise _refuse(Path(path), "a symbolic link")


def content_hash(path: Path) -> str:
    """A fast hash of the file's bytes: xxh3-128 when the xxhash package is present, else blake2b.

    The algorithm is part of the value, so a digest made with one is never compared equal to the other."""
    if _xxh3 is not None:
        digest, name = _xxh3(), "xxh3"
    else:
        digest, name = hashlib.blake2b(digest_size=16), "b2"
    buffer = bytearray(1 << 22)  # read into one reused buffer: about twice as fast as handle.read(n) blocks
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            digest.update(view[:count])
    return f"{name}:{digest.hexdigest()}"


def stat_key(st: os.stat_result) -> list[int]:
    """What must not move for a file to be taken as unchanged without reading it (git's index does the same)."""
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def printable(text: str) -> str:
    """``text`` safe to print on any terminal: undecodable bytes of a path appear as escapes, never an error."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
