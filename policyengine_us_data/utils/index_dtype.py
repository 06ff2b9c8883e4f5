"""The index-dtype rule, in one place: int32 indices while every count fits, else int64. scipy keeps a CSR's
`indices` and `indptr` in one dtype without copying only when it is the one this picks."""

from __future__ import annotations

import numpy as np

INT32_LIMIT = 2**31


def index_dtype(*counts: int) -> np.dtype:
    """int32 if every count (nnz, rows, columns, a largest index + 1) is below 2**31, else int64."""
    return np.dtype(np.int32 if max(counts, default=0) < INT32_LIMIT else np.int64)
