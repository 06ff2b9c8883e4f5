"""Clone geography: a state and congressional district for every clone-household column.

Each base household is cloned `n_clones` times; each clone lives somewhere else, so a district
target sees households from across the country. Districts are drawn with probability proportional
to their population (state population / seats, 2020 census and apportionment), without
replacement per record (Gumbel top-k), so one record's clones land in distinct districts. Column
`c = clone * n_records + record`. District geoid = state fips * 100 + district number (at-large
states and DC: 1). Counties and blocks are not assigned (-1 and "").
"""

from __future__ import annotations

import struct
import tokenize
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from policyengine_us_data.errors import InputError
from policyengine_us_data.states import STATES
from policyengine_us_data.utils.atomic import atomic_path

# What np.load and zipfile raise on a damaged .npz (garbled zip records, headers, compression flags).
NPZ_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, OverflowError, RuntimeError, NotImplementedError,
                   struct.error, zlib.error, zipfile.BadZipFile, SyntaxError, tokenize.TokenError)

STATE_FIPS = np.array([s[1] for s in STATES], dtype=np.int32)
STATE_ABBREVIATIONS: dict[int, str] = {s[1]: s[0] for s in STATES}
STATE_POPULATION: dict[int, int] = {s[1]: s[2] for s in STATES}
SEATS: dict[int, int] = {s[1]: s[3] for s in STATES}
N_DISTRICTS = sum(SEATS.values())  # 435 voting seats + DC's one = 436
BLOCK_WIDTH = 15
FORMAT = "clone_geography/1"
_RECORD_BATCH = 4096  # rows of the (records x districts) key matrix held at once


def district_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(district geoid, state fips, sampling weight) for all 436 districts, in geoid order."""
    geoids, states, weights = [], [], []
    for _, fips, population, seats in STATES:
        for district in range(1, seats + 1):
            geoids.append(fips * 100 + district)
            states.append(fips)
            weights.append(population / seats)
    return np.array(geoids, np.int32), np.array(states, np.int32), np.array(weights, np.float64)


def unknown_blocks(n: int) -> np.ndarray:
    """n empty block geoids as a read-only zero-stride view: 5 M columns cost no memory."""
    return np.broadcast_to(np.array("", dtype=f"<U{BLOCK_WIDTH}"), (n,))


@dataclass(frozen=True, eq=False)
class CloneGeography:
    """Per-column geography; arrays have length n_records * n_clones."""

    state_fips: np.ndarray
    cd_geoid: np.ndarray
    county_fips: np.ndarray
    block_geoid: np.ndarray
    n_records: int
    n_clones: int

    def __post_init__(self) -> None:
        problem = _problems(self)
        if problem:
            raise InputError(f"inconsistent clone geography: {problem}")

    @property
    def n_columns(self) -> int:
        return self.n_records * self.n_clones

    def save(self, path: str | Path) -> None:
        """Write an uncompressed npz atomically (no pickled objects inside)."""
        arrays = {
            "format": np.array(FORMAT), "n_records": np.array(self.n_records, np.int64),
            "n_clones": np.array(self.n_clones, np.int64), "state_fips": self.state_fips,
            "cd_geoid": self.cd_geoid, "county_fips": self.county_fips,
        }
        # unknown blocks are stored as one empty row, not n_columns empty strings
        blocks_known = bool(len(self.block_geoid)) and bool((self.block_geoid != "").any())
        arrays["blocks_known"] = np.array(blocks_known)
        arrays["block_geoid"] = self.block_geoid if blocks_known else self.block_geoid[:0]
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> CloneGeography:
        """Read and validate a file written by `save`; anything else raises InputError naming it."""
        fix = "regenerate it with assign_geography(...).save(path)"
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except FileNotFoundError:
            raise InputError(f"clone geography {path} does not exist; {fix}.") from None
        except NPZ_READ_ERRORS as exc:
            raise InputError(f"clone geography {path} is damaged or not an npz file ({exc}); {fix}.") from None
        needed = ("format", "n_records", "n_clones", "state_fips", "cd_geoid", "county_fips", "block_geoid")
        missing = [k for k in needed if k not in arrays]
        if missing or str(arrays["format"]) != FORMAT:
            raise InputError(f"{path} is not a clone geography file (missing {missing or 'format'}); {fix}.")
        try:
            n_records, n_clones = int(arrays["n_records"]), int(arrays["n_clones"])
            blocks = arrays["block_geoid"]
            if not bool(arrays.get("blocks_known", True)) and len(blocks) == 0:
                blocks = unknown_blocks(n_records * n_clones)
            ints = [arrays[k] if arrays[k].dtype.kind != "i" else arrays[k].astype(np.int32, copy=False)
                    for k in ("state_fips", "cd_geoid", "county_fips")]
            return cls(*ints, blocks, n_records, n_clones)
        except InputError as exc:
            raise InputError(f"clone geography {path}: {exc}; {fix}.") from None


def _problems(g: CloneGeography) -> str:
    """What is wrong with a geography's arrays, or "" if nothing."""
    n = g.n_records * g.n_clones
    if g.n_records < 0 or g.n_clones < 0:
        return "negative n_records or n_clones"
    expected = {"state_fips": "i", "cd_geoid": "i", "county_fips": "i", "block_geoid": "U"}
    for name, kind in expected.items():
        array = getattr(g, name)
        if not isinstance(array, np.ndarray) or array.ndim != 1 or array.dtype.kind != kind:
            return f"{name} must be a 1-d array of kind {kind!r}"
        if len(array) != n:
            return f"{name} has {len(array)} entries, expected n_records * n_clones = {n}"
    if n and not np.isin(g.state_fips, STATE_FIPS).all():
        return "state_fips holds codes that are not a state or DC"
    if n and not np.array_equal(g.cd_geoid // 100, g.state_fips):
        return "cd_geoid does not lie in its column's state"
    return ""


def assign_geography(n_records: int, n_clones: int, seed: int) -> CloneGeography:
    """Population-weighted districts, distinct across a record's clones; deterministic in `seed`."""
    if n_records < 0 or n_clones < 1:
        raise InputError(f"need n_records >= 0 and n_clones >= 1, got {n_records} and {n_clones}.")
    if n_clones > N_DISTRICTS:
        raise InputError(f"n_clones={n_clones} exceeds the {N_DISTRICTS} congressional districts, so a "
                         f"record's clones cannot get distinct districts; use at most {N_DISTRICTS} clones.")
    geoids, states, weights = district_table()
    log_w = np.log(weights)
    rng = np.random.default_rng(seed)
    chosen = np.empty((n_records, n_clones), dtype=np.int32)
    for start in range(0, n_records, _RECORD_BATCH):
        stop = min(start + _RECORD_BATCH, n_records)
        keys = log_w + rng.gumbel(size=(stop - start, N_DISTRICTS))
        if n_clones < N_DISTRICTS:
            top = np.argpartition(-keys, n_clones - 1, axis=1)[:, :n_clones]
        else:
            top = np.broadcast_to(np.arange(N_DISTRICTS), keys.shape).copy()
        # order each record's picks by key: the sequence of weighted draws without replacement
        order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1, kind="stable")
        chosen[start:stop] = np.take_along_axis(top, order, axis=1)
    district_index = chosen.T.reshape(-1)  # clone-major: c = clone * n_records + record
    n = n_records * n_clones
    return CloneGeography(
        state_fips=states[district_index].astype(np.int32), cd_geoid=geoids[district_index].astype(np.int32),
        county_fips=np.full(n, -1, dtype=np.int32), block_geoid=unknown_blocks(n),
        n_records=int(n_records), n_clones=int(n_clones),
    )


def derive_geography_from_blocks(blocks: np.ndarray) -> dict[str, np.ndarray]:
    """State, county and tract of 15-digit census block GEOIDs (SSCCCTTTTTTBBBB), read off the code itself.

    policyengine-us derives the county (and so ACA rating areas, SPM geography) from `county_fips`, so a
    clone's block is all it needs. Raises InputError naming a block that is not 15 digits.
    """
    blocks = np.asarray(blocks).astype(f"U{BLOCK_WIDTH}")
    lengths = np.char.str_len(blocks)
    malformed = (lengths != BLOCK_WIDTH) | ~np.char.isdigit(blocks)
    if malformed.any():
        raise InputError(f"block GEOID {str(blocks[malformed][0])!r} is not {BLOCK_WIDTH} digits "
                         "(state 2, county 3, tract 6, block 4); fix the geography's block_geoid.")
    return {
        "state_fips": blocks.astype("U2").astype(np.int32),
        "county_fips": blocks.astype("U5"),
        "tract_geoid": blocks.astype("U11"),
        "block_geoid": blocks,
    }
