"""A chunk's column set and a shard's entries against it: the checks both the shard writer and its readers make.

A chunk is a set of global columns (strictly increasing); a shard's entries must lie in it, sorted by (row, col)
without repeats.
"""

from __future__ import annotations

import numpy as np


def strictly_sorted(rows: np.ndarray, cols: np.ndarray) -> bool:
    """True when (row, col) pairs strictly increase: sorted and free of duplicates."""
    if rows.size < 2:
        return True
    d_rows = np.diff(rows)
    if np.any(d_rows < 0):
        return False
    same_row = d_rows == 0
    del d_rows
    return not np.any(same_row & (cols[1:] <= cols[:-1]))


def columns_problem(columns: np.ndarray, n_cols: int, n_expected: int) -> str:
    """What is wrong with a chunk's column set, or "" (strictly increasing, inside [0, n_cols))."""
    if columns.ndim != 1 or columns.size != n_expected:
        return f"holds {columns.size} columns, its plan slice has {n_expected}"
    if columns.size and (columns[0] < 0 or columns[-1] >= n_cols):
        return f"a column lies outside [0, {n_cols})"
    if columns.size > 1 and np.any(columns[1:] <= columns[:-1]):
        return "columns are not strictly increasing"
    return ""


def outside_columns(cols: np.ndarray, columns: np.ndarray) -> bool:
    """True if any entry's column is not one of the chunk's (strictly increasing) `columns`."""
    if not cols.size:
        return False
    if not columns.size:
        return True
    low, high = int(columns[0]), int(columns[-1])
    if cols.min() < low or cols.max() > high:
        return True
    if high - low + 1 == columns.size:  # a contiguous range: the bounds say it all
        return False
    member = np.zeros(high - low + 1, dtype=bool)
    member[columns - low] = True
    return not bool(member[cols - low].all())
