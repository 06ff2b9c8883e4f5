"""Reading `.npy` members of an uncompressed `.npz` without trusting them: each header is checked (1-D, the expected
dtype, a size that matches the bytes present) before any data is read, so a garbled file cannot make a reader
allocate what its header claims."""

from __future__ import annotations

import io
import struct
import zipfile
from typing import BinaryIO

import numpy as np

# A zip local file header: signature, versions, flags, method, time, date, crc, sizes, name and extra lengths.
LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")


def read_npy_header(handle: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(handle)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(handle)
    raise ValueError(f"unsupported .npy version {version}")


def check_npy(name: str, shape, fortran, dtype, expected: str, data_bytes: int) -> int:
    """Validate one member's .npy header before reading data; return the element count."""
    if np.dtype(dtype) != np.dtype(expected) or fortran or len(shape) != 1:
        raise ValueError(f"member {name!r} is {dtype} shape {shape}, expected 1-D {expected}")
    if shape[0] * np.dtype(expected).itemsize != data_bytes:
        raise ValueError(f"member {name!r} holds {data_bytes} data bytes, its header claims {shape[0]} items")
    return int(shape[0])


def small_member(archive: zipfile.ZipFile, name: str, expected: str) -> np.ndarray:
    """Read a small member through zipfile, so its CRC-32 is checked."""
    raw = archive.read(name + ".npy")
    buffer = io.BytesIO(raw)
    shape, fortran, dtype = read_npy_header(buffer)
    check_npy(name, shape, fortran, dtype, expected, len(raw) - buffer.tell())
    return np.frombuffer(raw, dtype=expected, offset=buffer.tell()).copy()
