"""The identity of this checkout's code: one hash the coordinator and every Modal worker compute alike.

A worker from an older `modal deploy` would otherwise stamp the coordinator's lineage on shards its
own (different) kernel wrote. Both sides hash the `policyengine_us_data` package's .py files by
relative name and bytes (never absolute paths), so the hash is the same in a container and on a laptop.
"""

from __future__ import annotations

import functools
from pathlib import Path

from policyengine_us_data.utils.hashing import named_files_sha256

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def tree_hash(root: Path) -> str:
    """sha256 over every .py file under `root` (relative posix name, size, bytes), in sorted order."""
    return named_files_sha256((path.relative_to(root).as_posix(), path) for path in sorted(root.rglob("*.py")))


@functools.lru_cache(maxsize=None)
def code_identity() -> str:
    """The package's source hash (cached: the code does not change under a running process)."""
    return tree_hash(PACKAGE_DIR)
