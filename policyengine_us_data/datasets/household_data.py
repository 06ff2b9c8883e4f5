"""The in-memory household dataset: PolicyEngine variable arrays for one period.

A `HouseholdData` is what every later stage passes around: the base dataset, a stratified subsample, a chunk's
clone households. It holds one flat array per variable, like PolicyEngine's h5 files, and answers the structural
questions (which entity a variable lives on, which entity each person belongs to) with vectorised index arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from policyengine_us_data.errors import DatasetError

ENTITIES: tuple[str, ...] = ("household", "tax_unit", "spm_unit", "family", "marital_unit")
"""PolicyEngine US group entities; every person belongs to exactly one of each."""

ALL_ENTITIES: tuple[str, ...] = ("person",) + ENTITIES

_PERSON_VARIABLES = (
    "person_id", "age", "is_female", "is_household_head", "is_tax_unit_head", "is_tax_unit_spouse",
    "is_tax_unit_dependent", "is_disabled", "is_blind", "has_esi", "is_pregnant", "is_full_time_student",
    "employment_income", "employment_income_before_lsr", "self_employment_income",
    "self_employment_income_before_lsr", "social_security_retirement", "social_security_disability",
    "social_security_survivors", "social_security_dependents", "taxable_interest_income",
    "tax_exempt_interest_income", "qualified_dividend_income", "non_qualified_dividend_income",
    "long_term_capital_gains", "long_term_capital_gains_before_response", "short_term_capital_gains",
    "taxable_pension_income", "taxable_private_pension_income", "taxable_public_pension_income",
    "rental_income", "partnership_s_corp_income", "unemployment_compensation", "alimony_income",
    "child_support_received", "pre_subsidy_rent", "real_estate_taxes", "ssi_reported",
    "health_insurance_premiums_without_medicare_part_b", "takes_up_medicaid_if_eligible",
    "takes_up_ssi_if_eligible", "person_weight",
)
_LINKS = tuple(f"person_{e}_id" for e in ENTITIES)

KNOWN_ENTITIES: dict[str, str] = {
    **{name: "person" for name in _PERSON_VARIABLES + _LINKS},
    **{f"{e}_id": e for e in ENTITIES},
    **{f"{e}_weight": e for e in ENTITIES},
    "state_fips": "household",
    "congressional_district_geoid": "household",
    "county_fips": "household",
    "block_geoid": "household",
    "spm_unit_pre_subsidy_childcare_expenses": "spm_unit",
    "takes_up_snap_if_eligible": "spm_unit",
    "takes_up_tanf_if_eligible": "spm_unit",
    "takes_up_aca_if_eligible": "tax_unit",
    "takes_up_eitc": "tax_unit",
}
"""Entity of every variable the synthetic generator writes, the ids and links, and common inputs.

Lengths alone cannot say which entity a variable is on when two entity counts coincide (a subset of
one-person households has as many tax units as persons), so known names are looked up here first.
"""


def id_name(entity: str) -> str:
    """The id variable of `entity` (`person_id`, `tax_unit_id`, ...)."""
    return f"{entity}_id"


def link_name(entity: str) -> str:
    """The person-to-entity link variable (`person_tax_unit_id`, ...)."""
    return f"person_{entity}_id"


@dataclass(frozen=True, eq=False)
class HouseholdData:
    """PolicyEngine variable arrays for one period, with vectorised structure lookups.

    `entities` names each variable's entity (`read_dataset` fills it for every variable; code that adds
    arrays carries it forward). Index arrays are computed once and cached (the instance is treated as immutable); equality
    is identity, since element-wise array comparison has no single truth value.
    """

    arrays: dict[str, np.ndarray]
    period: int
    entities: Mapping[str, str] = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def n_persons(self) -> int:
        """Number of persons (length of `person_id`)."""
        return int(len(self.arrays["person_id"]))

    @property
    def n_households(self) -> int:
        """Number of households (length of `household_id`)."""
        return self.n_entities("household")

    def n_entities(self, entity: str) -> int:
        """Number of instances of `entity` (`person` allowed)."""
        _check_entity(entity, allow_person=True)
        return int(len(self.arrays[id_name(entity)]))

    def person_entity_index(self, entity: str) -> np.ndarray:
        """For each person, the int64 position of its `entity` in the `{entity}_id` array."""
        _check_entity(entity)
        key = ("person_index", entity)
        if key not in self._cache:
            ids = np.asarray(self.arrays[id_name(entity)])
            links = np.asarray(self.arrays[link_name(entity)])
            order = np.argsort(ids, kind="stable")
            found = np.searchsorted(ids[order], links)
            found = np.minimum(found, len(ids) - 1) if len(ids) else found
            if len(links) and (not len(ids) or np.any(ids[order][found] != links)):
                raise DatasetError(f"{link_name(entity)} holds ids missing from {id_name(entity)}. "
                                   "Validate the data with validate_arrays to find them.")
            self._cache[key] = order[found].astype(np.int64)
        return self._cache[key]

    def entity_household_index(self, entity: str) -> np.ndarray:
        """For each instance of `entity`, the int64 position of its household (taken from its first member)."""
        _check_entity(entity)
        key = ("household_index", entity)
        if key not in self._cache:
            if entity == "household":
                result = np.arange(self.n_households, dtype=np.int64)
            else:
                person_entity = self.person_entity_index(entity)
                person_household = self.person_entity_index("household")
                result = np.full(self.n_entities(entity), -1, dtype=np.int64)
                # Reversed assignment leaves the first member's value in place.
                result[person_entity[::-1]] = person_household[::-1]
            self._cache[key] = result
        return self._cache[key]

    def entity_of(self, name: str) -> str:
        """The entity (`person` or one of `ENTITIES`) that variable `name` lives on.

        Known names come from `self.entities` (the reader fills it for every variable, from the file's
        metadata or policyengine-us) or `KNOWN_ENTITIES`. Only in-memory data built without them falls back
        to the one entity whose count equals the array's length; a length shared by several entities raises
        `DatasetError` (pass `entities={name: ...}` to resolve).
        """
        entity = self.entities.get(name) or KNOWN_ENTITIES.get(name)
        if entity is not None:
            return entity
        length = len(self.arrays[name])
        matches = [e for e in ALL_ENTITIES if self.n_entities(e) == length]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise DatasetError(f"variable {name!r} has length {length}, which matches no entity count "
                               f"({self.counts()}). Fix the array or drop it.")
        raise DatasetError(f"variable {name!r} has length {length}, shared by entities {matches}, so its entity "
                           f"is ambiguous. Pass HouseholdData(..., entities={{{name!r}: <entity>}}).")

    def counts(self) -> dict[str, int]:
        """Instance count of every entity including `person`."""
        return {e: self.n_entities(e) for e in ALL_ENTITIES}

    def replace_arrays(self, **updates: np.ndarray) -> "HouseholdData":
        """A copy with some arrays replaced or added (structure caches are not carried over)."""
        return HouseholdData({**self.arrays, **updates}, self.period, dict(self.entities))


def _check_entity(entity: str, allow_person: bool = False) -> None:
    allowed = ALL_ENTITIES if allow_person else ENTITIES
    if entity not in allowed:
        raise ValueError(f"unknown entity {entity!r}; expected one of {allowed}")
