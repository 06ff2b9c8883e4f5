"""The shared, read-only build state every chunk reads.

Written once (by `pipeline.state.write_state`: the `constraints` step, or `UnifiedMatrixBuilder`) as plain files (HDF5,
npz, JSON; never pickle), so it can cross a process pool or a Modal volume unchanged. Workers
load it once per process and reuse it for every chunk they run.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from policyengine_us_data.targets.constraints import ConstraintCache
from policyengine_us_data.datasets.geography import CloneGeography
from policyengine_us_data.targets.targets import TargetTable
from policyengine_us_data.datasets.h5io import read_dataset, write_dataset
from policyengine_us_data.datasets.household_data import HouseholdData
from policyengine_us_data.errors import InputError
from policyengine_us_data.utils.atomic import atomic_write_json
from policyengine_us_data.utils.hashing import arrays_sha256, dataset_sha256

STATE_FILE = "build_state.json"
DATASET_FILE = "dataset.h5"
GEOGRAPHY_FILE = "geography.npz"
TARGETS_FILE = "targets.json"
FORMAT_VERSION = 1
LOG = logging.getLogger(__name__)


def geography_arrays(geography: CloneGeography) -> dict[str, np.ndarray]:
    return {
        "state_fips": geography.state_fips,
        "cd_geoid": geography.cd_geoid,
        "county_fips": geography.county_fips,
        "block_geoid": np.asarray(geography.block_geoid).astype(str),
        "shape": np.array([geography.n_records, geography.n_clones]),
    }


@dataclass(frozen=True)
class BuildInputs:
    """Everything a chunk needs, loaded."""

    state_dir: Path
    data: HouseholdData
    geography: CloneGeography
    targets: TargetTable
    cache: ConstraintCache
    year: int
    rerandomize_takeup: bool
    simulator: str
    meta: dict[str, Any]

    @property
    def n_records(self) -> int:
        return self.data.n_households

    @property
    def n_clones(self) -> int:
        return self.geography.n_clones

    @property
    def n_columns(self) -> int:
        return self.n_records * self.n_clones

    @property
    def n_rows(self) -> int:
        return len(self.targets.rows)


def write_build_state(
    state_dir: str | os.PathLike,
    *,
    data: HouseholdData,
    geography: CloneGeography,
    targets: TargetTable,
    year: int,
    rerandomize_takeup: bool = False,
    simulator: str = "policyengine",
) -> dict[str, Any]:
    """Write the state files and `build_state.json` (last, so its presence means complete).

    Inputs the simulator refuses (policyengine-us 2.68 computes SPM thresholds and poverty flags itself)
    are dropped here with a warning naming them, as upstream's builder drops them.
    """
    from policyengine_us_data.kernel.simulator import get_simulator, refused_inputs_of

    data = drop_inputs(data, refused_inputs_of(get_simulator(simulator)))
    if geography.n_records != data.n_households:
        raise InputError(
            f"geography covers {geography.n_records} records but the dataset has {data.n_households} "
            "households: reassign the geography for this dataset"
        )
    root = Path(state_dir)
    root.mkdir(parents=True, exist_ok=True)
    write_dataset(root / DATASET_FILE, data)
    geography.save(root / GEOGRAPHY_FILE)
    targets.save_json(root / TARGETS_FILE)
    cache = ConstraintCache.from_targets(targets)
    cache.save(root)
    meta = {
        "format_version": FORMAT_VERSION,
        "year": int(year),
        "n_records": int(data.n_households),
        "n_clones": int(geography.n_clones),
        "n_columns": int(data.n_households * geography.n_clones),
        "n_rows": len(targets.rows),
        "rerandomize_takeup": bool(rerandomize_takeup),
        "simulator": simulator,
        "dataset_sha256": dataset_sha256(data),
        "geography_sha256": arrays_sha256(geography_arrays(geography)),
        "targets_fingerprint": targets.fingerprint(),
        "constraints_fingerprint": cache.fingerprint(),
        "constraint_groups": len(cache.groups),
    }
    atomic_write_json(root / STATE_FILE, meta)
    return meta


def drop_inputs(data: HouseholdData, refused: frozenset[str]) -> HouseholdData:
    """`data` without the refused variables, warning with their names when any is present."""
    present = sorted(set(data.arrays) & refused)
    if not present:
        return data
    LOG.warning("dropping dataset inputs %s: the simulator computes them by formula and refuses them as "
                "inputs (policyengine-us 2.68); the matrix uses its own values", ", ".join(present))
    kept = {name: array for name, array in data.arrays.items() if name not in refused}
    return HouseholdData(kept, data.period, dict(data.entities))


def read_state_meta(state_dir: str | os.PathLike) -> dict[str, Any]:
    """The parsed `build_state.json`, or an InputError saying the state is missing or damaged."""
    path = Path(state_dir) / STATE_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"no build state at {path}: run the `constraints` step first") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"build state {path} is unreadable ({exc}): rerun the `constraints` step") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise InputError(f"build state {path} has an unknown format: rerun the `constraints` step")
    return meta


_CACHE: dict[tuple[str, int, int], BuildInputs] = {}


def load_build_state(state_dir: str | os.PathLike) -> BuildInputs:
    """Load the state once per process; later calls for an unchanged state return the same object."""
    root = Path(state_dir).resolve()
    stat = (root / STATE_FILE).stat() if (root / STATE_FILE).exists() else None
    key = (str(root), stat.st_mtime_ns if stat else 0, stat.st_ino if stat else 0)
    if key not in _CACHE:
        meta = read_state_meta(root)
        _CACHE.clear()
        _CACHE[key] = BuildInputs(
            state_dir=root,
            data=read_dataset(root / DATASET_FILE),
            geography=CloneGeography.load(root / GEOGRAPHY_FILE),
            targets=TargetTable.load_json(root / TARGETS_FILE),
            cache=ConstraintCache.load(root),
            year=int(meta["year"]),
            rerandomize_takeup=bool(meta["rerandomize_takeup"]),
            simulator=str(meta["simulator"]),
            meta=meta,
        )
    return _CACHE[key]
