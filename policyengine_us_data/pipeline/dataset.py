"""Step 1: the base households (PolicyEngine h5) and a state and district for every clone column."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from policyengine_us_data.datasets.geography import assign_geography
from policyengine_us_data.datasets.h5io import read_dataset, write_dataset
from policyengine_us_data.datasets.stratify import DEFAULT_STRATIFY_SEED, stratified_subsample
from policyengine_us_data.datasets.synthetic import DEFAULT_HOUSEHOLDS, generate_synthetic


@dataclass(frozen=True)
class DatasetSummary:
    """What `prepare_dataset` wrote."""

    source: str
    households: int
    persons: int
    n_clones: int
    columns: int
    period: int


def prepare_dataset(dataset_out: Path, geography_out: Path, *, source: str | None = None,
                    households: int = DEFAULT_HOUSEHOLDS, target_households: int | None = None,
                    n_clones: int = 3, seed: int = 0) -> DatasetSummary:
    """Read `source` (or generate the embedded households), optionally subsample it, and give every clone
    column a state and district; writes the h5 dataset and the geography."""
    data = read_dataset(source) if source else generate_synthetic(households, seed=seed)
    if target_households:
        data = stratified_subsample(data, target_households, seed=seed or DEFAULT_STRATIFY_SEED)  # upstream's seed when ours is 0
    geography = assign_geography(data.n_households, n_clones, seed=seed)
    write_dataset(dataset_out, data)
    geography.save(geography_out)
    return DatasetSummary(source or "embedded synthetic", data.n_households, data.n_persons, n_clones,
                          data.n_households * n_clones, data.period)
