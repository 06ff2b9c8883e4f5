"""Content hashes: of files (streamed), and of arrays independent of the file format they were stored in."""

from __future__ import annotations

import hashlib
import os
from typing import Iterable, Mapping

import numpy as np


def file_sha256(path: str | os.PathLike, *, block: int = 1 << 20) -> str:
    """sha256 of a file, read in 1 MiB blocks (datasets are too big to slurp)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def named_files_sha256(files: Iterable[tuple[str, str | os.PathLike]]) -> str:
    """sha256 over (name, size, bytes) of each file, in the order given: a code version. Names, not absolute paths,
    are hashed, so the same source gives the same hash in a Modal container and on a laptop."""
    digest = hashlib.sha256()
    for name, path in files:
        with open(path, "rb") as handle:
            data = handle.read()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def arrays_sha256(arrays: Mapping[str, np.ndarray], extra: str = "") -> str:
    """sha256 over named arrays (names, dtypes, shapes, bytes, in name order), prefixed by `extra`.

    HDF5 and npz files carry timestamps, so hashing the files would call identical inputs different.
    """
    digest = hashlib.sha256(extra.encode())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"\0{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def dataset_sha256(data) -> str:
    """The content hash of a `HouseholdData`: its arrays and its period."""
    return arrays_sha256(data.arrays, extra=str(data.period))
