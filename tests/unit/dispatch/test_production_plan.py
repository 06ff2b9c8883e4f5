"""The production plan's arithmetic: batches under the container cap, stragglers, start-up, assembly, retries."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from policyengine_us_data.dispatch.plan import (
    ChunkTimes,
    PlanInputs,
    Shape,
    format_plans,
    percentile,
    plan_production,
)
from policyengine_us_data.errors import InputError


def inputs(seconds=(100.0, 100.0, 100.0, 200.0), rss=12.0, **overrides) -> PlanInputs:
    values = {"import_s": 40.0, "warm_up_s": 60.0, "cold_start_s": 20.0, "assembly_s_per_nnz": 1e-7,
              "nnz_per_column": 20.0, **overrides}
    return PlanInputs(ChunkTimes(tuple(seconds), rss, 25_000 * len(seconds)), **values)


def shape(**overrides) -> Shape:
    values = {"n_columns": 5_160_000, "n_chunks": 207, "workers": 50, "max_containers": 50, "retries": 2,
              "worker_memory_gb": 32.0, **overrides}
    return Shape(**values)


def test_the_plan_adds_start_up_the_slowest_batch_at_p95_assembly_and_retries():
    plan = plan_production(inputs(), shape())
    assert plan.inputs.chunk.median == 100.0 and plan.inputs.chunk.p95 == pytest.approx(185.0)  # 100 + 0.85 x 100
    assert (plan.chunks_per_container, plan.containers, plan.startup_s) == (5, 42, 120.0)
    assert plan.slowest_batch_s == pytest.approx(5 * 185.0)
    assert plan.assembly_s == pytest.approx(1e-7 * 20 * 5_160_000)
    assert plan.wall_s == pytest.approx(120 + 925 + 10.32)
    assert plan.wall_with_retries_s == pytest.approx(plan.wall_s + 2 * (120 + 185))
    assert plan.container_hours == pytest.approx((42 * 120 + 207 * 125) / 3600)
    assert plan.serial_s == pytest.approx(120 + 207 * 125 + 10.32)
    assert plan.fits and plan.memory_fits


def test_the_container_cap_bounds_the_fan_out():
    capped = plan_production(inputs(), shape(workers=200))
    assert (capped.chunks_per_container, capped.containers) == (5, 42)  # max_containers=50, not 200 workers
    uncapped = plan_production(inputs(), shape(workers=200, max_containers=200))
    assert (uncapped.chunks_per_container, uncapped.containers) == (2, 104)
    assert uncapped.wall_s < capped.wall_s


def test_a_plan_over_the_ceiling_or_the_worker_memory_says_no():
    plan = plan_production(inputs(seconds=(9_000.0, 12_000.0), rss=40.0), shape())
    assert plan.wall_with_retries_s > 14 * 3600 and not plan.fits and plan.memory_fits is False
    text = format_plans({"contiguous": plan})
    assert "fits 14 h" in text and " NO" in text and "40.0 GB (NO)" in text


def test_unmeasured_inputs_count_as_zero_and_are_named():
    plan = plan_production(inputs(import_s=None, warm_up_s=None, assembly_s_per_nnz=None, rss=None), shape())
    assert plan.startup_s == 20.0 and plan.assembly_s == 0.0 and plan.memory_fits is None
    assert plan.inputs.missing() == ["policyengine-us import", "first-simulation warm-up", "assembly time",
                                     "peak memory"]
    text = format_plans({"state": plan})
    assert "NOT MEASURED: assembly time, first-simulation warm-up, peak memory, policyengine-us import" in text
    assert "NOT MEASURED" not in format_plans({"state": plan_production(inputs(), shape())})


def test_two_kinds_side_by_side_with_their_ratio():
    contiguous = plan_production(inputs(seconds=(320.0,)), shape())
    state = plan_production(inputs(seconds=(40.0, 60.0)), shape(n_chunks=225))
    text = format_plans({"contiguous": contiguous, "state": state})
    ratio = contiguous.container_hours / state.container_hours
    assert f"contiguous / state: container-hours {ratio:.2f}x" in text
    assert text.splitlines()[0].split() == ["contiguous", "state"]


@pytest.mark.parametrize("bad", [{"workers": 0}, {"n_chunks": 0}, {"max_containers": 0}, {"retries": -1},
                                 {"worker_memory_gb": 0}, {"ceiling_h": 0}])
def test_a_nonsense_shape_is_refused(bad):
    with pytest.raises(InputError):
        shape(**bad)


@pytest.mark.parametrize("seconds", [(), (0.0,), (10.0, -1.0)])
def test_chunk_times_need_positive_measurements(seconds):
    with pytest.raises(InputError):
        ChunkTimes(seconds, 1.0, 1)


@given(st.lists(st.floats(0.001, 1e5), min_size=1, max_size=50), st.sampled_from([0, 5, 50, 95, 100]))
def test_percentile_is_numpys(values, q):
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


@given(n_chunks=st.integers(1, 3000), workers=st.integers(1, 300), cap=st.integers(1, 100),
       seconds=st.lists(st.floats(1, 3600), min_size=1, max_size=8))
def test_plan_invariants(n_chunks, workers, cap, seconds):
    plan = plan_production(inputs(seconds=seconds), shape(n_chunks=n_chunks, workers=workers, max_containers=cap))
    assert plan.containers <= min(workers, cap, n_chunks)
    assert plan.containers * plan.chunks_per_container >= n_chunks
    assert plan.chunks_per_container == math.ceil(n_chunks / min(workers, cap, n_chunks))
    assert plan.wall_with_retries_s >= plan.wall_s >= plan.startup_s + plan.slowest_batch_s
    assert plan.container_hours * 3600 >= n_chunks * plan.inputs.chunk.mean
