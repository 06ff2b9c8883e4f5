"""The simulation seam: the kernel asks a simulator for variable arrays and nothing else.

`PolicyEngineSimulator` is the real one (policyengine-us, imported lazily so importing this
module stays cheap). Tests may register a small deterministic simulator by name; the name is
stored in the build state, so a worker process or container resolves the same simulator.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Mapping, Protocol

import numpy as np

from policyengine_us_data.datasets.household_data import HouseholdData
from policyengine_us_data.errors import InputError
from policyengine_us_data.kernel import pe_speedups

INCOME_TAX = "income_tax"


@dataclass(frozen=True)
class SimulationRequest:
    """What one chunk needs: target variables on their own entity, constraint variables per
    person, and the variables whose neutralisation defines a reform row."""

    target_variables: tuple[str, ...]
    person_variables: tuple[str, ...]
    reform_variables: tuple[str, ...] = ()


@dataclass
class SimulationOutput:
    """Arrays from one simulation of one chunk's households."""

    own_entity: dict[str, np.ndarray] = field(default_factory=dict)
    per_person: dict[str, np.ndarray] = field(default_factory=dict)
    # reform variable -> income tax per tax unit under that reform; plus the baseline under "".
    income_tax: dict[str, np.ndarray] = field(default_factory=dict)


class Simulator(Protocol):
    """Anything that can compute variables for a household dataset."""

    name: str

    def entity_of(self, variable: str) -> str:
        """The entity key ("person", "tax_unit", "spm_unit", "household", ...) of a variable."""

    def variable_entities(self) -> Mapping[str, str]:
        """The entity key of every variable it knows (the dataset reader's source of entities)."""

    def refused_inputs(self) -> frozenset[str]:
        """Variables it computes itself and refuses as dataset inputs (dropped, with a warning)."""

    def compute(self, data: HouseholdData, request: SimulationRequest) -> SimulationOutput:
        """Simulate `data` and return the requested arrays."""

    def known_variables(self) -> set[str] | None:
        """Every variable it can compute (None: do not check target variables)."""

    def uprating(self):
        """An uprating function for target values (None: leave values as they are)."""


_REGISTRY: dict[str, Callable[[], Simulator]] = {}
_INSTANCES: dict[str, Simulator] = {}


def register_simulator(name: str, factory: Callable[[], Simulator]) -> None:
    """Make a simulator available by name (tests register deterministic ones)."""
    _REGISTRY[name] = factory
    _INSTANCES.pop(name, None)


def get_simulator(name: str = "policyengine") -> Simulator:
    """The per-process simulator instance for `name` (built once, then reused)."""
    if name not in _INSTANCES:
        _INSTANCES[name] = _factory(name)()
    return _INSTANCES[name]


def _factory(name: str) -> Callable[[], Simulator]:
    """A registered name, or "package.module:Class" so a fresh worker process can import it."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        module_name, _, attribute = name.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise InputError(f"cannot load simulator {name!r} ({exc}): give 'policyengine' or 'module:Class'") from None
    raise InputError(f"unknown simulator {name!r}: use 'policyengine' or 'module:Class'")


def variable_entities_of(simulator: Simulator) -> Mapping[str, str] | None:
    """A simulator's variable entities (None for one without the method: the reader then asks policyengine-us)."""
    method = getattr(simulator, "variable_entities", None)
    return method() if method else None


def refused_inputs_of(simulator: Simulator) -> frozenset[str]:
    """A simulator's refused dataset inputs (none for one without the method)."""
    method = getattr(simulator, "refused_inputs", None)
    return frozenset(method()) if method else frozenset()


def _as_numeric(values: np.ndarray) -> np.ndarray:
    """Enum and string results come back as str arrays; numbers and bools stay as they are."""
    array = np.asarray(values)
    if array.dtype == object:
        return array.astype(str)
    return array


class PolicyEngineSimulator:
    """policyengine-us behind the seam: one simulation per chunk, plus one per reform variable.

    A reform row neutralises one variable (`neutralize_variable`, as policyengine-core's reform does) in
    a system built once per process and reused by every chunk, instead of once per chunk as
    `Microsimulation(reform=...)` would. It shares the baseline's parameter tree
    (`pe_speedups.shared_neutralised_system`) where the checked policyengine-us allows, else it is
    core's reform (a deep copy of every parameter, ~30 s). (Zeroing the variable as an input is not
    equivalent: branches such as the itemisation choice delete and recompute it.)
    tests/integration/test_pe_speedups.py checks the result equals `Microsimulation(dataset, reform=...)`.
    """

    name = "policyengine"

    def __init__(self) -> None:
        if "policyengine_us" not in sys.modules:  # a slow import is announced on one line before it starts
            from policyengine_us_data.utils.progress_events import phase

            phase("import", "start", "loading policyengine-us (about 40 s, once per process)")
        from policyengine_us import Simulation
        from policyengine_us.system import system

        pe_speedups.install()
        # The plain Simulation, not Microsimulation: we need unweighted arrays, and Microsimulation
        # wraps every intermediate result in a weighted pandas series (2.5x the CPU, same numbers).
        self._simulation = Simulation
        # The instance policyengine-us builds at import: a second one would cost ~30 s more.
        self._system = system
        self._reformed: dict[str, object] = {}
        # The loaded system lives as long as the process: keep the collector from walking its
        # millions of objects (~1 s per full collection) each time a simulation is released.
        gc.freeze()

    @property
    def system(self):
        return self._system

    def known_variables(self) -> set[str]:
        return set(self._system.variables)

    def uprating(self):
        from policyengine_us_data.targets.uprating import policyengine_uprating

        return policyengine_uprating(self._system)

    def entity_of(self, variable: str) -> str:
        return self._system.variables[variable].entity.key

    def variable_type(self, variable: str):
        """What a constraint on `variable` may compare with (a `target_checks.VariableType`; None if unknown)."""
        from policyengine_us_data.targets.target_checks import variable_types_of

        return variable_types_of(self._system)(variable)

    def variable_entities(self) -> dict[str, str]:
        return {name: variable.entity.key for name, variable in self._system.variables.items()}

    def refused_inputs(self) -> frozenset[str]:
        """policyengine-us 2.68 refuses SPM thresholds and poverty outputs its calculator owns."""
        try:
            from policyengine_us.spm import REJECTED_DATASET_INPUTS
        except ImportError:  # releases before the SPM calculator accept them all
            return frozenset()
        return frozenset(REJECTED_DATASET_INPUTS)

    def compute(self, data: HouseholdData, request: SimulationRequest) -> SimulationOutput:
        from policyengine_us_data.datasets.h5io import write_dataset

        output = SimulationOutput()
        with tempfile.TemporaryDirectory(prefix="pe-chunk-") as tmp:
            path = os.path.join(tmp, "chunk.h5")
            write_dataset(path, data)
            self._baseline(path, data, request, output)
            gc.collect()  # simulations hold reference cycles; free one before the next is built
            for variable in request.reform_variables:
                output.income_tax[variable] = self._reform_income_tax(path, variable, data)
                gc.collect()
        # What survives a chunk is policyengine's caches (parameters at each instant, pinned systems: millions
        # of objects) kept for the process's lifetime; freezing them keeps later collections short.
        gc.freeze()
        return output

    def _reform_income_tax(self, path: str, variable: str, data: HouseholdData) -> np.ndarray:
        return self._calculate(self._neutralised(path, variable, data), INCOME_TAX, data.period)

    def _baseline(self, path: str, data: HouseholdData, request: SimulationRequest, output: SimulationOutput) -> None:
        """Every baseline array from one simulation (released when this returns)."""
        sim = self._simulation(dataset=path)
        for variable in request.target_variables:
            output.own_entity[variable] = self._calculate(sim, variable, data.period)
        for variable in request.person_variables:
            output.per_person[variable] = self._per_person(sim, variable, data)
        if request.reform_variables:
            output.income_tax[""] = self._calculate(sim, INCOME_TAX, data.period)

    def _neutralised(self, path: str, variable: str, data: HouseholdData):
        """A simulation under the (per-process, cached) system with `variable` neutralised."""
        return self._simulation(dataset=path, tax_benefit_system=self._neutralised_system(variable))

    def _neutralised_system(self, variable: str):
        if variable not in self._reformed:  # frozen with the chunk's caches
            shared = pe_speedups.shared_neutralised_system(self._system, variable)
            self._reformed[variable] = shared if shared is not None else neutralising_reform(variable)(self._system)
        return self._reformed[variable]

    def _per_person(self, sim, variable: str, data: HouseholdData) -> np.ndarray:
        """A variable broadcast to persons: each person gets its own entity's value."""
        values = self._calculate(sim, variable, data.period)
        entity = self.entity_of(variable)
        return values if entity == "person" else values[data.person_entity_index(entity)]

    @staticmethod
    def _calculate(sim, variable: str, period: int) -> np.ndarray:
        result = sim.calculate(variable, period)
        if hasattr(result, "decode_to_str"):  # enum variables compare as their names
            return np.asarray(result.decode_to_str()).astype(str)
        return _as_numeric(getattr(result, "values", result))


def neutralising_reform(variable: str):
    """policyengine-core's own way to neutralise a variable (used by tests as the reference)."""
    from policyengine_core.reforms import Reform

    class Neutralise(Reform):
        def apply(self) -> None:
            self.neutralize_variable(variable)

    Neutralise.__name__ = f"Neutralise_{variable}"
    return Neutralise


register_simulator("policyengine", PolicyEngineSimulator)
