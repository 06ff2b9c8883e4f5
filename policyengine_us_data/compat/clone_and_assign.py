"""Upstream's geography object, `GeographyAssignment`, as a thin adapter over `CloneGeography`.

Upstream's callers build a `GeographyAssignment` with string `cd_geoid` ("3701"), `county_fips`
("37183") and `block_geoid` ("371830501001001") arrays and integer `state_fips`, and pass it to
`build_matrix` / `build_matrix_chunked`. Everything that takes a geography here accepts it (or any
object with the same six fields, such as upstream's own class) and converts it once, with
validation, through `as_clone_geography`. Integer arrays are accepted too; an empty county or block
means "unknown" (policyengine-us then derives the county from the state).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from policyengine_us_data.datasets.geography import BLOCK_WIDTH, CloneGeography, assign_geography
from policyengine_us_data.errors import InputError

FIELDS = ("block_geoid", "cd_geoid", "county_fips", "state_fips")
_FIX = "fix the geography (arrays of n_records * n_clones entries, column = clone * n_records + record)"


@dataclass
class GeographyAssignment:
    """Per-column geography in upstream's types; index i is clone i // n_records, record i % n_records."""

    block_geoid: np.ndarray
    cd_geoid: np.ndarray
    county_fips: np.ndarray
    state_fips: np.ndarray
    n_records: int
    n_clones: int

    def to_clone_geography(self) -> CloneGeography:
        return as_clone_geography(self)

    @classmethod
    def from_clone_geography(cls, geography: CloneGeography) -> "GeographyAssignment":
        """Upstream's string form of one of ours (unknown counties and blocks become "")."""
        county = np.where(geography.county_fips >= 0, np.char.zfill(geography.county_fips.astype(str), 5), "")
        return cls(
            block_geoid=np.asarray(geography.block_geoid).astype(f"U{BLOCK_WIDTH}"),
            cd_geoid=geography.cd_geoid.astype(str), county_fips=county.astype("U5"),
            state_fips=geography.state_fips.astype(np.int32), n_records=geography.n_records,
            n_clones=geography.n_clones,
        )


def assign_random_geography(n_records: int, n_clones: int = 10, seed: int = 42) -> GeographyAssignment:
    """Upstream's entry point over `assign_geography`: population-weighted districts, distinct across a
    record's clones. Blocks and counties are not drawn (upstream's block distribution file is not shipped)."""
    return GeographyAssignment.from_clone_geography(assign_geography(n_records, n_clones, seed))


def as_clone_geography(geography: Any) -> CloneGeography:
    """Our `CloneGeography` from either kind of geography, validated; InputError names the bad field."""
    if isinstance(geography, CloneGeography):
        return geography
    missing = [f for f in (*FIELDS, "n_records", "n_clones") if not hasattr(geography, f)]
    if missing:
        raise InputError(f"geography is missing required field(s) {missing}: pass a CloneGeography or a "
                         "GeographyAssignment.")
    n_records, n_clones = int(geography.n_records), int(geography.n_clones)
    n_total = n_records * n_clones
    arrays = {}
    for name in FIELDS:
        array = np.asarray(getattr(geography, name))
        if array.ndim != 1 or len(array) != n_total:
            raise InputError(f"geography.{name} has length {len(array.ravel())}, expected {n_total} "
                             f"(n_records * n_clones); {_FIX}.")
        arrays[name] = array
    county = _codes(arrays["county_fips"], "county_fips", allow_unknown=True)
    blocks = _blocks(arrays["block_geoid"])
    state = _codes(arrays["state_fips"], "state_fips")
    _check_nesting(state, county, blocks)
    return CloneGeography(state.astype(np.int32), _codes(arrays["cd_geoid"], "cd_geoid").astype(np.int32),
                          county.astype(np.int32), blocks, n_records, n_clones)


def _codes(array: np.ndarray, name: str, allow_unknown: bool = False) -> np.ndarray:
    """Integer codes from ints or digit strings ("3701", "06"); "" (or -1) is unknown where allowed."""
    if array.dtype.kind in "iu":
        values = array.astype(np.int64)
    else:
        text = np.char.strip(array.astype(str))
        unknown = text == ""
        if unknown.any() and not allow_unknown:
            raise InputError(f"geography.{name} has empty entries; every column needs one. {_FIX}.")
        bad = ~unknown & ~np.char.isdigit(text)
        if bad.any():
            raise InputError(f"geography.{name} holds {str(text[bad][0])!r}, not a numeric code; {_FIX}.")
        values = np.where(unknown, "-1", text).astype(np.int64)
    if (values < -1).any() or (not allow_unknown and (values < 0).any()):
        raise InputError(f"geography.{name} holds negative codes; {_FIX}.")
    return values


def _blocks(array: np.ndarray) -> np.ndarray:
    text = np.char.strip(array.astype(str)) if array.dtype.kind not in "iu" else _zero_padded(array)
    bad = (text != "") & ((np.char.str_len(text) != BLOCK_WIDTH) | ~np.char.isdigit(text))
    if bad.any():
        raise InputError(f"geography.block_geoid holds {str(text[bad][0])!r}, not a {BLOCK_WIDTH}-digit block "
                         f"GEOID; {_FIX}.")
    return text.astype(f"U{BLOCK_WIDTH}")


def _zero_padded(array: np.ndarray) -> np.ndarray:
    return np.char.zfill(array.astype(np.int64).astype(str), BLOCK_WIDTH)


def _check_nesting(state: np.ndarray, county: np.ndarray, blocks: np.ndarray) -> None:
    """A block lies in its county, a county in its state (districts are checked by CloneGeography)."""
    known_county = county >= 0
    if (known_county & (county // 1000 != state)).any():
        raise InputError(f"geography.county_fips lies outside its column's state_fips; {_FIX}.")
    known_block = blocks != ""
    if known_block.any():
        block_county = np.where(known_block, blocks.astype("U5"), "0").astype(np.int64)
        if (known_block & known_county & (block_county != county)).any():
            raise InputError(f"geography.block_geoid lies outside its column's county_fips; {_FIX}.")
        if (known_block & (block_county // 1000 != state)).any():
            raise InputError(f"geography.block_geoid lies outside its column's state_fips; {_FIX}.")
