"""Step 2: select and check the target rows, and write the shared build state every chunk reads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

from policyengine_us_data.kernel.build_state import write_build_state
from policyengine_us_data.pipeline.default_targets import default_targets_path
from policyengine_us_data.datasets.geography import CloneGeography
from policyengine_us_data.kernel.simulator import get_simulator, variable_entities_of
from policyengine_us_data.targets.targets import TargetTable, load_targets
from policyengine_us_data.datasets.h5io import read_dataset
from policyengine_us_data.errors import InputError


def select_targets(db: str | os.PathLike | None, year: int, *, simulator: str = "policyengine",
                   variables: Sequence[str] | None = None, geo_levels: Sequence[str] | None = None,
                   target_ids: Sequence[int] | None = None, known_variables: set[str] | None = None,
                   uprating: Callable | None = None, variable_type: Callable | None = None) -> TargetTable:
    """The selected, checked, uprated and sorted target rows (the simulator's checks and uprating unless given);
    InputError when the database or the filters select nothing or are bad."""
    path = str(db or default_targets_path())
    sim = get_simulator(simulator)
    table = load_targets(
        path, year, variables=variables, geo_levels=geo_levels, target_ids=target_ids,
        known_variables=sim.known_variables() if known_variables is None else known_variables,
        uprating=sim.uprating() if uprating is None else uprating,
        # optional on the seam: a simulator without it skips the constraint-type check
        variable_type=variable_type or getattr(sim, "variable_type", None),
    )
    if not table.rows:
        raise InputError(f"no active targets selected from {path}: loosen the target filters")
    return table


def write_state(state_dir: Path, *, dataset: str | os.PathLike, geography: CloneGeography, targets: TargetTable,
                year: int, rerandomize_takeup: bool = True, simulator: str = "policyengine") -> dict[str, Any]:
    """Write the shared build state every chunk reads (dataset, geography, targets, constraint cache); returns
    its metadata. Variable entities come from the simulator, as every worker will see them."""
    entities = variable_entities_of(get_simulator(simulator))
    return write_build_state(state_dir, data=read_dataset(dataset, variable_entities=entities), geography=geography,
                             targets=targets, year=year, rerandomize_takeup=rerandomize_takeup, simulator=simulator)
