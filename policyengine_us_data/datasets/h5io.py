"""Read and write household datasets in PolicyEngine's h5 layout, with validation that says what is wrong.

Layout: one HDF5 group per variable, one dataset per period inside it (`age/2024`), the format
`policyengine_us.Microsimulation(dataset=path)` reads. A top-level dataset without a period group (the older
flat layout) is read as belonging to the chosen period. Strings are stored as fixed-width UTF-8 bytes and read
back as numpy `U` arrays. Each variable group carries an `entity` attribute, so a file we wrote reads back
without policyengine-us; other files get their entities from policyengine-us (`datasets.entities`).
Every failure a user can cause is a `DatasetError` naming the file, the problem and
the fix; h5py and OS errors never escape raw, so a damaged download reads as a clear message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import h5py
import numpy as np

from policyengine_us_data.datasets.entities import ENTITY_ATTRIBUTE, resolve_entities
from policyengine_us_data.datasets.household_data import (
    ENTITIES,
    KNOWN_ENTITIES,
    HouseholdData,
    id_name,
    link_name,
)
from policyengine_us_data.datasets.validate import validate_h5_nodes
from policyengine_us_data.errors import DatasetError
from policyengine_us_data.utils.atomic import atomic_path

_REWRITE = "Regenerate or re-download the dataset."


def write_dataset(path: str | os.PathLike, data: HouseholdData) -> Path:
    """Validate `data` and write it atomically to `path` in PolicyEngine's layout; return the path."""
    target = Path(path)
    validate_arrays(data.arrays, f"dataset for {target}", data.entities or None)
    entities = {name: data.entity_of(name) for name in data.arrays}
    with atomic_path(target) as tmp:
        with h5py.File(tmp, "w") as handle:
            for name, array in data.arrays.items():
                group = handle.create_group(name)
                group.attrs[ENTITY_ATTRIBUTE] = entities[name]
                group.create_dataset(str(int(data.period)), data=_to_storable(np.asarray(array)))
    return target


def _to_storable(array: np.ndarray) -> np.ndarray:
    """Strings (numpy `U` or object) become fixed-width UTF-8 bytes, which h5py stores natively."""
    if array.dtype.kind == "U" or array.dtype == object:
        encoded = [str(v).encode("utf-8") for v in array.tolist()]
        width = max((len(v) for v in encoded), default=1) or 1
        return np.array(encoded, dtype=f"S{width}")
    return array


def _from_stored(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind == "S":
        return np.char.decode(array, "utf-8").astype(str)
    if array.dtype == object:
        return np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in array], dtype=str)
    return array


def read_dataset(
    path: str | os.PathLike,
    period: int | None = None,
    *,
    variable_entities: Mapping[str, str] | None = None,
) -> HouseholdData:
    """Read and validate a PolicyEngine h5 dataset.

    `period=None` takes the period of `person_id` (the latest, if it has several). Variables without a value
    for the chosen period are skipped, as they carry no input for it. Values are validated (streamed, see
    `datasets.validate`) before anything is loaded. `variable_entities` maps variable names to entities (a
    simulator's `variable_entities()`); None means policyengine-us's, loaded only when the file's own metadata
    leaves a variable unresolved.
    """
    source, chosen, arrays, entities = _open_validated(path, period, variable_entities, load=True)
    validate_arrays(arrays, str(source), entities)
    return HouseholdData(arrays, chosen, entities)


def check_dataset(path: str | os.PathLike, period: int | None = None) -> int:
    """Validate a dataset file the way `read_dataset` does without loading it (bounded memory); return its period."""
    return _open_validated(path, period, None, load=False)[1]


def _open_validated(path: str | os.PathLike, period: int | None, variable_entities: Mapping[str, str] | None,
                    load: bool) -> tuple[Path, int, dict[str, np.ndarray], dict[str, str]]:
    """(file, chosen period, arrays and each one's entity when `load`, else empty)."""
    source = Path(path)
    if not source.exists():
        raise DatasetError(f"{source}: dataset file not found. Check the path, or omit it to use the embedded "
                           "synthetic default dataset.")
    if source.is_dir():
        raise DatasetError(f"{source}: is a directory, not a dataset file. Pass the path of the .h5 file.")
    try:
        if not h5py.is_hdf5(source):
            raise DatasetError(f"{source}: not an HDF5 file (wrong format or damaged). Pass a PolicyEngine .h5 "
                               f"dataset. {_REWRITE}")
        with h5py.File(source, "r") as handle:
            chosen, nodes, owners = _select_nodes(handle, source, period)
            validate_h5_nodes(nodes, str(source))
            if not load:
                return source, chosen, {}, {}
            arrays = {name: _from_stored(np.asarray(node[()])) for name, node in nodes.items()}
            entities = resolve_entities(arrays, lambda name: _stored_entity(owners[name]), variable_entities,
                                        str(source))
    except DatasetError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, AttributeError, IndexError) as exc:
        raise DatasetError(f"{source}: unreadable HDF5 file ({type(exc).__name__}: {exc}); it is probably "
                           f"truncated or damaged. {_REWRITE}") from exc
    return source, chosen, arrays, entities


def _stored_entity(node: h5py.Group | h5py.Dataset) -> str | None:
    value = node.attrs.get(ENTITY_ATTRIBUTE)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _select_nodes(handle: h5py.File, source: Path,
                  period: int | None) -> tuple[int, dict[str, h5py.Dataset], dict[str, h5py.HLObject]]:
    """(chosen period, variable name -> its h5 dataset for that period, name -> the object holding its
    metadata), nothing read yet."""
    periods_by_var: dict[str, dict[int, h5py.Dataset]] = {}
    flat: dict[str, h5py.Dataset] = {}
    owners: dict[str, h5py.HLObject] = dict(handle.items())
    for name, node in owners.items():
        if isinstance(node, h5py.Group):
            periods_by_var[name] = {int(k): v for k, v in node.items()
                                    if k.isdigit() and isinstance(v, h5py.Dataset)}
        elif isinstance(node, h5py.Dataset):
            flat[name] = node
    chosen = _choose_period(periods_by_var, flat, source, period)
    nodes = {name: by_period[chosen] for name, by_period in periods_by_var.items() if chosen in by_period}
    for name, node in flat.items():
        nodes.setdefault(name, node)
    return chosen, nodes, owners


def _choose_period(periods_by_var: dict[str, dict[int, h5py.Dataset]], flat: dict, source: Path,
                   period: int | None) -> int:
    person_periods = sorted(periods_by_var.get("person_id", {}))
    if "person_id" not in periods_by_var and "person_id" not in flat:
        raise DatasetError(f"{source}: required variable 'person_id' is missing. A PolicyEngine dataset needs "
                           f"person_id and, for each of {ENTITIES}, E_id and person_E_id. {_REWRITE}")
    if period is not None:
        if person_periods and int(period) not in person_periods:
            raise DatasetError(f"{source}: requested period {period} is absent; person_id has periods "
                               f"{person_periods}. Pass one of those periods.")
        return int(period)
    if person_periods:
        return person_periods[-1]
    all_periods = sorted({p for by in periods_by_var.values() for p in by})
    if not all_periods:
        raise DatasetError(f"{source}: no period found (no 'variable/<year>' datasets). Pass period=<year> "
                           "for a flat-layout file, or write the file with write_dataset.")
    return all_periods[-1]


def validate_arrays(arrays: dict[str, np.ndarray], source: str, entities: Mapping[str, str] | None = None) -> None:
    """Raise `DatasetError` unless `arrays` form a consistent PolicyEngine person/entity structure.

    Checks: ids and links present, one-dimensional, unique ids, every array's length matching an entity
    count (its own entity's count when `entities` or `KNOWN_ENTITIES` names it), links pointing at existing
    ids, every entity with members, and every sub-entity inside a single household.
    """
    if "person_id" not in arrays:
        raise DatasetError(f"{source}: required variable 'person_id' is missing. Add a person_id array "
                           "(one value per person).")
    for name, array in arrays.items():
        if np.ndim(array) != 1:
            raise DatasetError(f"{source}: variable {name!r} has shape {np.shape(array)}; every variable must "
                               "be one-dimensional (one value per person or entity). Flatten or drop it.")
    counts = {"person": len(arrays["person_id"])}
    for entity in ENTITIES:
        for name in (id_name(entity), link_name(entity)):
            if name not in arrays:
                raise DatasetError(f"{source}: required variable {name!r} is missing. Every dataset needs "
                                   f"{id_name(entity)} (one per {entity}) and {link_name(entity)} (one per "
                                   f"person). {_REWRITE}")
        counts[entity] = len(arrays[id_name(entity)])
    _check_lengths(arrays, counts, source, entities or {})
    _check_ids(arrays, source)
    _check_nesting(arrays, source)


def _check_lengths(arrays: dict[str, np.ndarray], counts: dict[str, int], source: str,
                   entities: Mapping[str, str]) -> None:
    for name, array in arrays.items():
        entity = entities.get(name) or KNOWN_ENTITIES.get(name)
        if entity is not None and len(array) != counts[entity]:
            raise DatasetError(f"{source}: variable {name!r} has length {len(array)} but {entity}-level "
                               f"variables need length {counts[entity]} (the number of {id_name(entity)} "
                               "values). Fix or drop the variable.")
        if entity is None and len(array) not in counts.values():
            raise DatasetError(f"{source}: variable {name!r} has length {len(array)}, which matches no entity "
                               f"count {counts}. Fix or drop the variable.")


def _check_ids(arrays: dict[str, np.ndarray], source: str) -> None:
    for entity in ("person",) + ENTITIES:
        ids = np.asarray(arrays[id_name(entity)])
        unique, counts = np.unique(ids, return_counts=True)
        if len(unique) != len(ids):
            dup = unique[counts > 1][0]
            raise DatasetError(f"{source}: duplicate ids in {id_name(entity)!r} (e.g. {_show(dup)} appears "
                               f"{counts[counts > 1][0]} times). Give every {entity} a unique id.")
        if entity == "person":
            continue
        links = np.asarray(arrays[link_name(entity)])
        missing = ~np.isin(links, unique)
        if missing.any():
            raise DatasetError(f"{source}: link {link_name(entity)!r} points at ids that do not exist in "
                               f"{id_name(entity)!r} ({int(missing.sum())} persons, e.g. id "
                               f"{_show(links[missing][0])}). Fix the link or add the missing {entity}.")
        empty = ~np.isin(unique, links)
        if empty.any():
            raise DatasetError(f"{source}: {entity} id {_show(unique[empty][0])} in {id_name(entity)!r} has no "
                               f"members ({int(empty.sum())} such). Drop empty {entity} rows.")


def _show(value: object) -> str:
    """A numpy scalar as its plain Python repr (`9`, not `np.int64(9)`)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _check_nesting(arrays: dict[str, np.ndarray], source: str) -> None:
    """Each sub-entity's members must share one household (clone households are materialised per household)."""
    household = np.asarray(arrays[link_name("household")])
    for entity in ENTITIES[1:]:
        links = np.asarray(arrays[link_name(entity)])
        _, first, inverse = np.unique(links, return_index=True, return_inverse=True)
        split = household != household[first][inverse.ravel()]
        if split.any():
            raise DatasetError(f"{source}: {entity} id {_show(links[split][0])} has members in more than one "
                               f"household. Every {entity} must lie within a single household.")
