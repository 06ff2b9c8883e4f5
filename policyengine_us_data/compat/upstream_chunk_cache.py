"""Upstream's chunk-directory rules for `build_matrix_chunked(chunk_dir=..., resume_chunks=True)`.

Upstream keeps its shards under `chunk_dir/coo/` and, on resume, refuses a shard whose recorded
column range is not the one planned for its file name ("Cached chunk ... covers cols a-b, expected
c-d"), rather than silently recomputing it: a shard in the wrong place means the directory was edited
by hand or mixes two builds, and its callers match on that message. The project's own runner
recomputes such a shard instead; this module is only used by the upstream-compatible facade.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Iterable

import numpy as np

from policyengine_us_data.datasets.geography import NPZ_READ_ERRORS
from policyengine_us_data.shards.shards import read_shard_header
from policyengine_us_data.errors import InputError, ShardError

COO_DIR = "coo"


def declared_range(path: str | Path) -> tuple[int, int] | None:
    """[col_start, col_end) a shard says it holds: from our header, else from upstream's `col_start` /
    `col_end` members; None when neither can be read (the shard is then verified and recomputed)."""
    try:
        header = read_shard_header(path)
        return header.col_start, header.col_end
    except ShardError:
        pass
    try:
        with np.load(path, allow_pickle=False) as npz:
            return int(np.asarray(npz["col_start"]).ravel()[0]), int(np.asarray(npz["col_end"]).ravel()[0])
    except (*NPZ_READ_ERRORS, IndexError, TypeError, zipfile.LargeZipFile):
        return None


def refuse_misplaced_shards(plans: Iterable) -> None:
    """Raise InputError (a ValueError) for the first existing shard that covers other columns than planned."""
    for plan in plans:
        path = Path(plan.shard_path)
        if not path.exists():
            continue
        found = declared_range(path)
        if found is not None and found != (plan.col_start, plan.col_end):
            raise InputError(
                f"Cached chunk {path} covers cols {found[0]}-{found[1] - 1}, expected "
                f"{plan.col_start}-{plan.col_end - 1}: the shard holds another chunk's columns, so the chunk "
                "directory was edited or mixes two builds. Remove that file, or rerun without resume_chunks "
                "to rebuild every chunk."
            )
