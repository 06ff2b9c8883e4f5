"""The two shortcuts the real simulator takes give exactly policyengine-us's own results.

1. pe_speedups keys the pinned-system cache by parameter tree: every target variable is
   bit-for-bit identical with and without it, and a second chunk adds no pinned copy and keeps no
   simulation alive (keying by object ids once leaked ~1 GB per 500-column chunk). The pinned copy
   shares every parameter subtree its pin leaves alone with the base tree, which it leaves as it was.
2. Reform rows reuse one neutralised system per process, which shares the baseline's parameter
   tree: income tax equals `Microsimulation(dataset, reform=neutralise)`, built afresh, and the
   tree is the baseline's own.
"""

from __future__ import annotations

import gc
import os
import tempfile

import numpy as np
import pytest

from policyengine_us_data.kernel import pe_speedups
from policyengine_us_data.kernel.simulator import SimulationRequest, neutralising_reform
from policyengine_us_data.datasets.h5io import write_dataset
from policyengine_us_data.datasets.synthetic import generate_synthetic

VARIABLES = ("income_tax", "state_income_tax", "eitc", "snap", "aca_ptc", "ssi", "tanf", "adjusted_gross_income",
             "household_net_income", "medicaid_enrolled")


@pytest.fixture(scope="module")
def data():
    """60 households, half of them moved to New York, whose credits exercise the pinned systems."""
    base = generate_synthetic(60, seed=21)
    state = np.where(np.arange(base.n_households) % 2 == 0, 36, base.arrays["state_fips"])
    return base.replace_arrays(state_fips=state.astype(base.arrays["state_fips"].dtype))


def simulate_all(data, pe_simulator):
    out = pe_simulator.compute(data, SimulationRequest(VARIABLES, ("age",), ()))
    return out.own_entity


def test_pinned_cache_patch_changes_no_result(data, pe_simulator):
    patched = simulate_all(data, pe_simulator)
    pe_speedups.uninstall()
    try:
        unpatched = simulate_all(data, pe_simulator)
    finally:
        assert pe_speedups.install()
    for name in VARIABLES:
        np.testing.assert_array_equal(patched[name], unpatched[name], err_msg=name)
    assert np.count_nonzero(patched["income_tax"]) > 0


@pytest.mark.parametrize("variable", ["ctc", "eitc"])
def test_cached_reform_system_equals_a_fresh_reformed_microsimulation(data, pe_simulator, variable):
    """The default targets' two reform rows. ctc is the demanding case: New York's credit recomputes it
    in a branch under pinned rules. (Each fresh reformed Microsimulation costs ~40 s.)"""
    from policyengine_us import Microsimulation

    request = SimulationRequest((), (), (variable,))
    pe_simulator.compute(generate_synthetic(5, seed=2), request)  # builds and caches the reformed system
    out = pe_simulator.compute(data, request)  # reuses it
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "d.h5")
        write_dataset(path, data)
        reformed = Microsimulation(dataset=path, reform=neutralising_reform(variable))
        expected = np.asarray(reformed.calculate("income_tax", data.period).values)
    np.testing.assert_array_equal(out.income_tax[variable], expected)
    assert np.any(out.income_tax[variable] != out.income_tax[""]), f"neutralising {variable} changed nothing"


def test_a_second_chunk_reuses_the_pinned_copies_and_keeps_no_simulation_alive(data, pe_simulator):
    from policyengine_core.simulations import Simulation

    request = SimulationRequest(VARIABLES, ("age",), ())
    pe_simulator.compute(data, request)
    pinned = len(pe_speedups._PINNED)
    assert pinned >= 1, "the New York households should have needed a pinned system"
    pe_simulator.compute(data, request)
    assert len(pe_speedups._PINNED) == pinned
    gc.unfreeze()  # frozen objects are invisible to gc.get_objects()
    try:
        gc.collect()
        alive = [type(o).__name__ for o in gc.get_objects() if isinstance(o, Simulation)]
    finally:
        gc.freeze()
    assert alive == []


def test_the_new_york_pin_copies_only_the_federal_ctc_and_leaves_the_base_tree_as_it_was(data, pe_simulator):
    pe_simulator.compute(data, SimulationRequest(("state_income_tax",), (), ()))
    pins = [(ref(), pinned) for (name, _, _), (ref, pinned) in pe_speedups._PINNED.items()
            if name == "ny_pre_tcja_ctc" and ref() is not None]
    assert pins, "the New York households should have needed the pre-TCJA pin"
    base, pinned = pins[-1][0], pins[-1][1].parameters
    assert pinned.gov.states is base.gov.states and pinned.gov.hhs is base.gov.hhs
    assert pinned.gov.irs.credits.ctc is not base.gov.irs.credits.ctc
    for node in (base, base.gov, base.gov.irs, base.gov.irs.credits):
        assert all(getattr(child, "parent", node) is node for child in node.children.values())
    from policyengine_core.parameters import Parameter

    base_ctc = {p.name: p for p in base.gov.irs.credits.ctc.get_descendants() if isinstance(p, Parameter)}
    pinned_ctc = [p for p in pinned.gov.irs.credits.ctc.get_descendants() if isinstance(p, Parameter)]
    assert len(pinned_ctc) == len(base_ctc)
    for parameter in pinned_ctc:
        assert parameter("2024-01-01") == base_ctc[parameter.name]("2017-01-01"), parameter.name
    assert any(p("2024-01-01") != p("2017-01-01") for p in base_ctc.values()), "the base tree was pinned too"


def test_a_reform_rows_system_reads_the_baseline_parameter_tree(pe_simulator):
    reformed = pe_simulator._neutralised_system("eitc")
    assert reformed.parameters is pe_simulator.system.parameters
    assert reformed.variables["eitc"].is_neutralized and not pe_simulator.system.variables["eitc"].is_neutralized


def test_the_first_county_formula_gives_policyengine_us_own_answer_for_every_state(pe_simulator):
    from policyengine_us.variables.household.demographic.geographic.state_code import StateCode

    formula = pe_simulator.system.variables["first_county_in_state"].formulas["0001-01-01"]
    original = formula.__wrapped__
    states = np.array([state.value for state in StateCode] + ["XX", "NY", "CA"])
    rng = np.random.default_rng(3)
    for sample in (states, states[rng.permutation(len(states))], states[:0]):
        expected = original(lambda *_: sample, 2024, None)
        for _ in range(2):  # the second call answers from the kept table
            got = formula(lambda *_: sample, 2024, None)
            assert got.dtype == expected.dtype and got.shape == expected.shape
            assert list(got) == list(expected)
