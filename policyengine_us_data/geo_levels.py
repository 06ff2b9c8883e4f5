"""Geo levels, the one definition: their names in row order, and the small integer code each has in the
constraint cache and the kernel (national 0, state 1, district 2). A leaf module, so the target reader, the
constraint cache, the kernel and the report agree without importing one another."""

from __future__ import annotations

from typing import Iterable

import numpy as np

GEO_LEVELS: tuple[str, ...] = ("national", "state", "district")
NATIONAL, STATE, DISTRICT = range(len(GEO_LEVELS))  # the codes, in GEO_LEVELS order


def level_code(level: str) -> int:
    """The code of a geo level name (its position in GEO_LEVELS); ValueError for an unknown name."""
    return GEO_LEVELS.index(level)


def level_codes(levels: Iterable[str]) -> np.ndarray:
    """int8 codes of many level names (the constraint cache's per-row `geo_level`)."""
    return np.array([level_code(level) for level in levels], dtype=np.int8)


def ordered_levels(present: Iterable[str]) -> list[str]:
    """The levels present, in their fixed order, then any others alphabetically."""
    present = set(present)
    return [g for g in GEO_LEVELS if g in present] + sorted(present - set(GEO_LEVELS))
