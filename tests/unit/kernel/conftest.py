"""A small build state on the toy simulator: synthetic households, two clones, every cell rule."""

from __future__ import annotations

import pytest

from policyengine_us_data.kernel.build_state import write_build_state
from policyengine_us_data.datasets.geography import assign_geography
from policyengine_us_data.targets.targets import load_targets
from policyengine_us_data.datasets.synthetic import generate_synthetic
from tests.support.target_db import every_rule_targets, make_target_db

TOY = "tests.support.toy_simulator:ToySimulator"
N_RECORDS, N_CLONES = 50, 2


@pytest.fixture(scope="module")
def toy_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    data = generate_synthetic(N_RECORDS, seed=11)
    geography = assign_geography(N_RECORDS, N_CLONES, seed=5)
    states = sorted(set(int(s) for s in geography.state_fips[:6]))
    districts = sorted(set(int(d) for d in geography.cd_geoid[:4]))
    db = make_target_db(root / "targets.db", every_rule_targets(states, districts))
    table = load_targets(db, 2024)
    return data, geography, table, db


@pytest.fixture()
def toy_state(tmp_path, toy_inputs):
    data, geography, table, _ = toy_inputs
    state_dir = tmp_path / "state"
    write_build_state(state_dir, data=data, geography=geography, targets=table, year=2024,
                      rerandomize_takeup=True, simulator=TOY)
    return state_dir
