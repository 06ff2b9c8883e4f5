"""Materialise a subset of households (repeats allowed) as a self-contained dataset.

This is the workhorse behind every chunk's clone households and the stratified subsample, so it is fully
vectorised: persons are gathered with one stable sort plus `np.repeat`, and sub-entities are renumbered with
one `np.unique` per entity. The output has fresh contiguous ids 0..n-1 for every entity, persons grouped by new
household in selection order, and each selected copy of a household gets its own persons and sub-entities.
"""

from __future__ import annotations

import numpy as np

from policyengine_us_data.datasets.household_data import ENTITIES, HouseholdData, id_name, link_name
from policyengine_us_data.errors import DatasetError


def select_households(data: HouseholdData, positions: np.ndarray) -> HouseholdData:
    """The households at `positions` (indices into `household_id`, repeats allowed), renumbered 0..n-1."""
    positions = np.asarray(positions)
    if positions.ndim != 1 or (positions.size and positions.dtype.kind not in "iu"):
        raise DatasetError(f"household positions must be a 1-d integer array, got dtype {positions.dtype} "
                           f"and shape {positions.shape}. Pass np.int64 positions into household_id.")
    positions = positions.astype(np.int64, copy=False)
    n_households = data.n_households
    if positions.size and (positions.min() < 0 or positions.max() >= n_households):
        bad = positions[(positions < 0) | (positions >= n_households)][0]
        raise DatasetError(f"household position {bad} is out of range for a dataset of {n_households} "
                           "households. Pass positions in 0..n_households-1.")

    person_src, new_household = _gather_persons(data, positions)
    entity_src: dict[str, np.ndarray] = {"person": person_src, "household": positions}
    arrays: dict[str, np.ndarray] = {}
    for entity in ENTITIES[1:]:
        source_entity, new_links = _renumber(data.person_entity_index(entity)[person_src], new_household)
        entity_src[entity] = source_entity
        arrays[id_name(entity)] = _ids(data, id_name(entity), len(source_entity))
        arrays[link_name(entity)] = new_links.astype(data.arrays[link_name(entity)].dtype, copy=False)
    arrays["person_id"] = _ids(data, "person_id", len(person_src))
    arrays["household_id"] = _ids(data, "household_id", len(positions))
    arrays[link_name("household")] = new_household.astype(data.arrays[link_name("household")].dtype, copy=False)

    for name, array in data.arrays.items():
        if name not in arrays:
            arrays[name] = np.asarray(array)[entity_src[data.entity_of(name)]]
    ordered = {name: arrays[name] for name in data.arrays}
    return HouseholdData(ordered, data.period, dict(data.entities))


def _gather_persons(data: HouseholdData, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Source person index of every output person, and its new household position."""
    person_household = data.person_entity_index("household")
    order = np.argsort(person_household, kind="stable")
    counts = np.bincount(person_household, minlength=data.n_households)
    starts = np.cumsum(counts) - counts
    sizes = counts[positions]
    new_household = np.repeat(np.arange(len(positions), dtype=np.int64), sizes)
    offsets = np.cumsum(sizes) - sizes
    within = np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(offsets, sizes)
    person_src = order[np.repeat(starts[positions], sizes) + within]
    return person_src, new_household


def _renumber(old_entity: np.ndarray, new_household: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New entity ids keyed by (new household, old entity): source entity per new id, and each person's id."""
    n_old = int(old_entity.max()) + 1 if old_entity.size else 1
    key = new_household * n_old + old_entity
    unique_keys, inverse = np.unique(key, return_inverse=True)
    return unique_keys % n_old, inverse.ravel().astype(np.int64)


def _ids(data: HouseholdData, name: str, n: int) -> np.ndarray:
    """Contiguous ids 0..n-1 in the dtype the source used (PolicyEngine declares `family_id` a float)."""
    return np.arange(n, dtype=np.int64).astype(data.arrays[name].dtype, copy=False)
