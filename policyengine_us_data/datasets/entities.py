"""Which entity each variable of a dataset lives on: stated, never guessed from array lengths.

An array's length cannot say its entity when two entity counts coincide (a test fixture with as
many tax units, SPM units and families as households; a subsample of one-person households), so
the reader takes every variable's entity from, in order: the ids and links every dataset carries,
a mapping the caller passes (the simulator seam's `variable_entities()`), `KNOWN_ENTITIES` (the
policyengine-us entities of the inputs the synthetic generator writes), the h5 file's own metadata
(the `entity` attribute `write_dataset` stores on each variable), and finally policyengine-us's
tax-benefit system itself (imported only when something is still unresolved, since the import
costs ~40 s). A variable none of them knows is named in a `DatasetError`.

The file's attributes are read last and only for names nothing else resolves: reading an
attribute of a damaged h5 can hang inside libhdf5 (found by the fuzz test of the reader).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable, Iterable, Mapping

from policyengine_us_data.datasets.household_data import ALL_ENTITIES, ENTITIES, KNOWN_ENTITIES, id_name, link_name
from policyengine_us_data.errors import DatasetError

ENTITY_ATTRIBUTE = "entity"
"""The h5 attribute on each variable group (or flat dataset) naming its entity."""

_SHOWN = 10


def structural_entities() -> dict[str, str]:
    """The ids and links every dataset has: facts of the layout, true for any tax-benefit system."""
    known = {id_name("person"): "person"}
    for entity in ENTITIES:
        known[id_name(entity)] = entity
        known[link_name(entity)] = "person"
    return known


@lru_cache(maxsize=1)
def policyengine_variable_entities() -> dict[str, str]:
    """Every policyengine-us variable's entity key, from the tax-benefit system loaded at import."""
    from policyengine_us.system import system

    return {name: variable.entity.key for name, variable in system.variables.items()}


def resolve_entities(
    names: Iterable[str],
    stored: Callable[[str], str | None],
    variable_entities: Mapping[str, str] | None,
    source: str,
) -> dict[str, str]:
    """The entity of every name, or `DatasetError` naming the variables nobody knows.

    `stored(name)` reads the file's own entity metadata (asked only for names the layout, the mapping
    and `KNOWN_ENTITIES` leave open). `variable_entities=None` means "policyengine-us's": it is loaded
    only if the file's metadata and the layout leave a name unresolved.
    """
    names = list(names)
    structural = structural_entities()
    resolved: dict[str, str] = {}
    pending: list[str] = []
    for name in names:
        entity = (structural.get(name) or (variable_entities or {}).get(name) or KNOWN_ENTITIES.get(name)
                  or stored(name))
        if entity is None:
            pending.append(name)
        else:
            resolved[name] = entity
    if pending and variable_entities is None:
        system_entities = policyengine_variable_entities()
        for name in [n for n in pending if n in system_entities]:
            resolved[name] = system_entities[name]
        pending = [n for n in pending if n not in resolved]
    if pending:
        who = "policyengine-us" if variable_entities is None else "the simulator"
        shown = ", ".join(repr(n) for n in pending[:_SHOWN]) + (" ..." if len(pending) > _SHOWN else "")
        raise DatasetError(
            f"{source}: {len(pending)} variable(s) unknown to {who}, so their entity is unknown: {shown}. "
            "Drop or rename them (a variable policyengine-us renamed needs its new name)."
        )
    bad = {n: e for n, e in resolved.items() if e not in ALL_ENTITIES}
    if bad:
        name, entity = next(iter(bad.items()))
        raise DatasetError(f"{source}: variable {name!r} is on entity {entity!r}, which is none of {ALL_ENTITIES}. "
                           "Fix its entity metadata or drop it.")
    return resolved
