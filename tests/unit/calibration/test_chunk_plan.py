"""Chunk plans: the state-major plan covers every column once, in single-state chunks or groups of whole
states, within the chunk size, from the geography alone; the contiguous plan is upstream's ranges."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policyengine_us_data.shards.chunk_plan import (
    ChunkPlan,
    chunk_columns,
    partition_columns,
    partition_plan,
    state_major_order,
)
from policyengine_us_data.datasets.geography import STATE_FIPS, assign_geography
from policyengine_us_data.errors import InputError


def state_chunks(state_fips: np.ndarray, chunk_size: int) -> list[np.ndarray]:
    return [chunk_columns("state", state_fips, s, e) for _, s, e in partition_plan("state", state_fips, chunk_size)]


def check_state_plan(state_fips: np.ndarray, chunk_size: int) -> None:
    chunks = state_chunks(state_fips, chunk_size)
    every = np.concatenate(chunks)
    np.testing.assert_array_equal(np.sort(every), np.arange(len(state_fips)))  # exact cover: once each
    for columns in chunks:
        assert 0 < len(columns) <= chunk_size
        assert np.all(np.diff(columns) > 0)
        states = np.unique(state_fips[columns])
        if len(states) > 1:  # a declared group: every state in it is whole here
            assert all(np.isin(np.flatnonzero(state_fips == s), columns).all() for s in states)
    for state in np.unique(state_fips):  # a state split over several chunks is split evenly, alone in each
        holding = [c for c in chunks if (state_fips[c] == state).any()]
        if len(holding) > 1:
            sizes = [len(c) for c in holding]
            assert max(sizes) - min(sizes) <= 1 and all((state_fips[c] == state).all() for c in holding)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from([int(s) for s in STATE_FIPS[:12]]), min_size=1, max_size=300),
       st.integers(1, 120))
def test_state_plan_covers_once_in_whole_states_within_the_chunk_size(states, chunk_size):
    check_state_plan(np.array(states, dtype=np.int32), chunk_size)


@pytest.mark.parametrize("chunk_size", [1, 7, 500, 2000, 5000])
def test_state_plan_on_a_real_geography(chunk_size):
    geography = assign_geography(1000, 5, seed=3)
    check_state_plan(geography.state_fips, chunk_size)


def test_large_states_get_chunks_of_their_own_and_lead_the_order():
    geography = assign_geography(1000, 430, seed=1)  # production-shaped: every state has > 800 columns
    fips = geography.state_fips
    chunks = state_chunks(fips, 2000)
    n_states = [len(np.unique(fips[c])) for c in chunks]
    assert sum(n == 1 for n in n_states) >= 0.9 * len(chunks)  # nearly every chunk is one state
    assert max(n_states) <= 3  # the rest pair up a few small states
    states, counts = np.unique(fips, return_counts=True)
    assert np.unique(fips[chunks[0]]).tolist() == [int(states[np.argmax(counts)])]  # California first
    contiguous = partition_plan("contiguous", fips, 2000)
    assert len(chunks) <= len(contiguous) + 51  # at most one partial chunk per state more


def test_the_plan_follows_from_the_geography_alone():
    fips = assign_geography(300, 4, seed=9).state_fips
    again = fips.copy()  # another array with the same codes: no cached state may leak
    assert partition_plan("state", fips, 50) == partition_plan("state", again, 50)
    np.testing.assert_array_equal(state_major_order(fips), state_major_order(again))
    for _, s, e in partition_plan("state", fips, 50):
        np.testing.assert_array_equal(chunk_columns("state", fips, s, e), chunk_columns("state", again, s, e))
    other = assign_geography(300, 4, seed=10).state_fips
    assert partition_plan("state", other, 50) != partition_plan("state", fips, 50)


def test_the_contiguous_plan_is_upstreams_column_ranges():
    fips = assign_geography(100, 3, seed=2).state_fips
    assert partition_plan("contiguous", fips, 40) == partition_columns(300, 40) == [
        (0, 0, 40), (1, 40, 80), (2, 80, 120), (3, 120, 160), (4, 160, 200), (5, 200, 240), (6, 240, 280),
        (7, 280, 300)]
    np.testing.assert_array_equal(chunk_columns("contiguous", fips, 280, 300), np.arange(280, 300))


def test_bad_plan_kind_and_sizes_are_refused():
    fips = assign_geography(10, 1, seed=0).state_fips
    with pytest.raises(InputError, match="unknown chunk plan 'by-county'"):
        partition_plan("by-county", fips, 5)
    with pytest.raises(InputError, match="--chunk-size"):
        partition_plan("state", fips, 0)
    with pytest.raises(InputError, match="no columns"):
        partition_plan("state", fips[:0], 5)
    with pytest.raises(InputError, match="unknown chunk plan"):
        ChunkPlan.from_json({"chunk_id": 0, "col_start": 0, "col_end": 1, "shard_path": "x",
                             "lineage_signature": "s", "kind": "by-county"})


def test_plans_round_trip_through_json_with_their_kind():
    plan = ChunkPlan(3, 10, 20, "chunk_000003.npz", "sig", "state")
    assert ChunkPlan.from_json(plan.to_json()) == plan
    legacy = {k: v for k, v in plan.to_json().items() if k != "kind"}
    assert ChunkPlan.from_json(legacy).kind == "contiguous"
