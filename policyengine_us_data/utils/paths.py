"""Path flags checked before a build starts: a file where a file belongs, a directory where a directory belongs.

Each check raises `InputError` naming the flag, the path and the fix. An output file's parent directory must
already exist: the builder never creates directories outside the ones it owns, so a typo cannot scatter files
across the machine.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from policyengine_us_data.errors import InputError

__all__ = ["check_input_file", "check_output_file", "check_output_dir"]


def check_input_file(path: str | os.PathLike, flag: str) -> Path:
    """`path` must be an existing regular file (not a directory)."""
    target = Path(path)
    if target.is_dir():
        raise InputError(f"{flag} {target} is a directory, not a file: pass the path of the file inside it.")
    if not target.exists():
        raise InputError(f"{flag} {target} does not exist: check the path.")
    return target


def check_output_file(path: str | os.PathLike, flag: str) -> Path:
    """`path` may be written: it is not a directory, and its parent is an existing directory."""
    target = Path(path)
    if target.is_dir():
        raise InputError(f"{flag} {target} is a directory: give a file path (e.g. {target / 'calibration_package.pkl'}).")
    parent = target.parent
    blocker = _first_file_on_the_way(parent)
    if blocker is not None:
        raise InputError(f"{flag} {target}: {blocker} is a file, not a directory: choose a path whose parent is a "
                         "directory.")
    if not parent.is_dir():
        raise InputError(f"{flag} {target}: its directory {parent} does not exist; create it first "
                         f"(mkdir -p {shlex.quote(str(parent))}) or choose another path.")
    if not os.access(parent, os.W_OK):
        raise InputError(f"{flag} {target}: cannot write in {parent}; choose a directory you can write to.")
    return target


def check_output_dir(path: str | os.PathLike, flag: str) -> Path:
    """`path` is a directory or can become one (nothing on the way is a regular file)."""
    target = Path(path)
    blocker = _first_file_on_the_way(target)
    if blocker is not None:
        what = "is a file" if blocker == target else f"lies below the file {blocker}"
        raise InputError(f"{flag} {target} {what}, not a directory: choose a directory path.")
    return target


def _first_file_on_the_way(path: Path) -> Path | None:
    """The first existing non-directory among `path` and its ancestors (None when all are directories or absent)."""
    for candidate in [*reversed(path.parents), path]:
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return None
