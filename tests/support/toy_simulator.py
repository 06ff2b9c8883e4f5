"""A tiny deterministic simulator for unit tests of the kernel's seams.

It derives every variable from the dataset's own input arrays with simple, state-dependent
formulas, so tests run in milliseconds; every behaviour tested with it is also tested with
the real policyengine-us in tests/integration/.
"""

from __future__ import annotations

import numpy as np

from policyengine_us_data.kernel.simulator import SimulationOutput, SimulationRequest
from policyengine_us_data.targets.target_checks import VariableType
from policyengine_us_data.datasets.household_data import KNOWN_ENTITIES, HouseholdData

ENTITY = {
    "age": "person",
    "employment_income": "person",
    "ssi": "person",
    "medicaid_enrolled": "person",
    "person_count": "person",
    "adjusted_gross_income": "tax_unit",
    "income_tax": "tax_unit",
    "eitc": "tax_unit",
    "state_income_tax": "tax_unit",
    "aca_ptc": "tax_unit",
    "tax_unit_count": "tax_unit",
    "snap": "spm_unit",
    "tanf": "spm_unit",
    "spm_unit_count": "spm_unit",
    "household_net_income": "household",
    "household_count": "household",
    "state_fips": "household",
}


def _sum(values: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(index, weights=values, minlength=n)


class ToySimulator:
    """Deterministic stand-in for policyengine-us with the same entity structure."""

    name = "tests.support.toy_simulator:ToySimulator"

    def entity_of(self, variable: str) -> str:
        return ENTITY[variable]

    def known_variables(self) -> set[str]:
        return set(ENTITY)

    def variable_type(self, variable: str) -> VariableType | None:
        """Booleans are booleans, everything else a number (as policyengine-us types them)."""
        if variable not in ENTITY:
            return None
        return VariableType("bool" if variable == "medicaid_enrolled" else "number")

    def variable_entities(self) -> dict[str, str]:
        """What it computes plus the inputs the synthetic generator writes (their policyengine-us entities)."""
        return {**KNOWN_ENTITIES, **ENTITY}

    def refused_inputs(self) -> frozenset[str]:
        return frozenset()

    def uprating(self):
        return None

    def _all(self, data: HouseholdData, neutralised: str | None = None) -> dict[str, np.ndarray]:
        a = data.arrays
        n_p = data.n_persons
        earn = np.asarray(a.get("employment_income_before_lsr", np.zeros(n_p)), dtype=np.float64)
        earn = earn + np.asarray(a.get("self_employment_income_before_lsr", np.zeros(n_p)), dtype=np.float64)
        age = np.asarray(a.get("age", np.full(n_p, 40.0)), dtype=np.float64)
        tu = data.person_entity_index("tax_unit")
        spm = data.person_entity_index("spm_unit")
        hh = data.person_entity_index("household")
        n_tu, n_spm, n_hh = data.n_entities("tax_unit"), data.n_entities("spm_unit"), data.n_households
        state = np.asarray(a["state_fips"], dtype=np.float64)
        out: dict[str, np.ndarray] = {"age": age, "employment_income": earn}
        agi = _sum(earn, tu, n_tu)
        eitc = np.where((agi > 0) & (agi < 30_000), 2_000 - agi / 20, 0.0)
        out["adjusted_gross_income"] = agi
        out["eitc"] = np.zeros(n_tu) if neutralised == "eitc" else eitc
        out["state_income_tax"] = agi * (state[data.entity_household_index("tax_unit")] % 7) / 100
        out["aca_ptc"] = np.where((agi > 20_000) & (agi < 60_000), 1_500.0, 0.0)
        tax = 0.15 * agi - out["eitc"]
        if neutralised and neutralised != "eitc":
            tax = tax + 0.01 * out[neutralised] if out[neutralised].shape == tax.shape else tax
        out["income_tax"] = tax
        spm_income = _sum(earn, spm, n_spm)
        out["snap"] = np.maximum(0.0, 3_000 - 0.3 * spm_income)
        if "takes_up_snap_if_eligible" in a:  # take-up inputs matter, as in policyengine-us
            out["snap"] = out["snap"] * np.asarray(a["takes_up_snap_if_eligible"], dtype=bool)
        out["tanf"] = np.where(spm_income < 5_000, 800.0, 0.0)
        out["ssi"] = np.where((age >= 65) & (earn < 10_000), 600.0, 0.0)
        out["medicaid_enrolled"] = _sum(earn, hh, n_hh)[hh] < 25_000
        out["household_net_income"] = _sum(earn, hh, n_hh) - _sum(tax, data.entity_household_index("tax_unit"), n_hh)
        out["state_fips"] = state
        return out

    def compute(self, data: HouseholdData, request: SimulationRequest) -> SimulationOutput:
        values = self._all(data)
        output = SimulationOutput()
        for variable in request.target_variables:
            output.own_entity[variable] = values[variable]
        for variable in request.person_variables:
            entity = ENTITY[variable]
            v = values[variable]
            output.per_person[variable] = v if entity == "person" else v[data.person_entity_index(entity)]
        if request.reform_variables:
            output.income_tax[""] = values["income_tax"]
        for variable in request.reform_variables:
            output.income_tax[variable] = self._all(data, neutralised=variable)["income_tax"]
        return output
