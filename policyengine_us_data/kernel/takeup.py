"""Take-up re-draws keyed by (variable, original household id, clone index).

A counter-based hash (splitmix64) turns each key into a uniform draw, so a column's take-up
never depends on which chunk it lands in or how many columns the chunk holds. This is the
fix for upstream's per-chunk "reported anchors" rescaling, which made the matrix depend on
chunking.
"""

from __future__ import annotations

import hashlib

import numpy as np

# Approximate take-up rates among eligible units; the seeded draw sets each
# `takes_up_*` input to draw < rate.
TAKEUP_RATES: dict[str, float] = {
    "takes_up_snap_if_eligible": 0.82,
    "takes_up_aca_if_eligible": 0.67,
    "takes_up_medicaid_if_eligible": 0.93,
    "takes_up_ssi_if_eligible": 0.60,
    "takes_up_tanf_if_eligible": 0.25,
    "takes_up_eitc": 0.80,
}

# The entity each take-up input lives on in policyengine-us 2.68.
TAKEUP_ENTITIES: dict[str, str] = {
    "takes_up_snap_if_eligible": "spm_unit",
    "takes_up_aca_if_eligible": "tax_unit",
    "takes_up_medicaid_if_eligible": "person",
    "takes_up_ssi_if_eligible": "person",
    "takes_up_tanf_if_eligible": "spm_unit",
    "takes_up_eitc": "tax_unit",
}

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """One round of splitmix64 on a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK
        return z ^ (z >> np.uint64(31))


def variable_key(variable: str, seed: int = 0) -> np.uint64:
    """A stable 64-bit key for a variable name (independent of Python's hash seed)."""
    digest = hashlib.sha256(f"{seed}:{variable}".encode()).digest()
    return np.uint64(int.from_bytes(digest[:8], "little"))


def keyed_uniforms(
    variable: str,
    household_ids: np.ndarray,
    clone_indices: np.ndarray,
    member_index: np.ndarray,
    seed: int = 0,
) -> np.ndarray:
    """Uniform [0, 1) draws, one per entity, keyed by (variable, household id, clone, member).

    `member_index` is the entity's position among its household's entities of that kind, so
    households with several tax units get independent draws.
    """
    key = variable_key(variable, seed)
    with np.errstate(over="ignore"):
        x = _splitmix64(np.full(len(household_ids), key, dtype=np.uint64) ^ household_ids.astype(np.uint64))
        x = _splitmix64(x ^ clone_indices.astype(np.uint64))
        x = _splitmix64(x ^ member_index.astype(np.uint64))
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def position_within_group(group: np.ndarray) -> np.ndarray:
    """For each element, how many earlier elements share its group (0, 1, 2, ...)."""
    order = np.argsort(group, kind="stable")
    sorted_group = group[order]
    starts = np.r_[0, np.flatnonzero(sorted_group[1:] != sorted_group[:-1]) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(group)]))
    ranks = np.empty(len(group), dtype=np.int64)
    ranks[order] = np.arange(len(group)) - run_start
    return ranks
