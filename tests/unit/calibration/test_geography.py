"""Clone geography: real seat counts, distinct districts per record, population shares, files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from policyengine_us_data.datasets.geography import (
    N_DISTRICTS,
    SEATS,
    STATE_POPULATION,
    CloneGeography,
    assign_geography,
    district_table,
)
from policyengine_us_data.errors import InputError


def test_apportionment_and_populations() -> None:
    assert len(SEATS) == 51 and N_DISTRICTS == 436
    assert sum(s for f, s in SEATS.items() if f != 11) == 435
    assert (SEATS[6], SEATS[48], SEATS[12], SEATS[36], SEATS[11], SEATS[56]) == (52, 38, 28, 26, 1, 1)
    assert sum(STATE_POPULATION.values()) == 331_449_281  # 2020 census resident population
    geoids, states, _ = district_table()
    assert len(set(geoids.tolist())) == 436 and (geoids // 100 == states).all()
    assert 601 in geoids and 652 in geoids and 653 not in geoids and 1101 in geoids and 200 not in geoids


def test_column_layout_and_distinct_districts() -> None:
    g = assign_geography(300, 20, seed=1)
    assert g.n_columns == 6000 and len(g.cd_geoid) == 6000
    per_record = g.cd_geoid.reshape(20, 300)  # row = clone, column = record
    assert all(len(np.unique(per_record[:, r])) == 20 for r in range(300))
    assert g.cd_geoid[3 * 300 + 5] == per_record[3, 5]  # column c = clone * n_records + record
    assert (g.cd_geoid // 100 == g.state_fips).all()
    assert g.state_fips.dtype == np.int32 and g.cd_geoid.dtype == np.int32 and g.county_fips.dtype == np.int32
    assert (g.county_fips == -1).all() and g.block_geoid.dtype.kind == "U" and (g.block_geoid == "").all()


def test_all_districts_when_clones_equal_districts() -> None:
    g = assign_geography(3, N_DISTRICTS, seed=2)
    for r in range(3):
        assert len(np.unique(g.cd_geoid.reshape(N_DISTRICTS, 3)[:, r])) == N_DISTRICTS
    with pytest.raises(InputError, match="exceeds the 436"):
        assign_geography(3, N_DISTRICTS + 1, seed=2)


def test_population_shares_roughly_right() -> None:
    n_records, n_clones = 20_000, 3
    g = assign_geography(n_records, n_clones, seed=7)
    total = sum(STATE_POPULATION.values())
    shares = {fips: pop / total for fips, pop in STATE_POPULATION.items()}
    fips = np.array(sorted(shares))
    observed = np.array([(g.state_fips == f).sum() for f in fips], dtype=float)
    expected = np.array([shares[f] for f in fips]) * n_records * n_clones
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < 110, chi2  # 50 degrees of freedom: the 99.99th percentile is about 99
    assert abs(observed[fips == 6][0] / (n_records * n_clones) - shares[6]) < 0.005


def test_deterministic_in_seed() -> None:
    a, b, c = assign_geography(50, 4, 11), assign_geography(50, 4, 11), assign_geography(50, 4, 12)
    assert np.array_equal(a.cd_geoid, b.cd_geoid)
    assert not np.array_equal(a.cd_geoid, c.cd_geoid)


def test_save_load_round_trip(tmp_path: Path) -> None:
    g = assign_geography(40, 5, 3)
    g.save(tmp_path / "geo.npz")
    back = CloneGeography.load(tmp_path / "geo.npz")
    for name in ("state_fips", "cd_geoid", "county_fips", "block_geoid"):
        assert np.array_equal(getattr(back, name), getattr(g, name))
    assert (back.n_records, back.n_clones) == (40, 5)
    known = CloneGeography(g.state_fips, g.cd_geoid, g.county_fips,
                           np.array([f"{i:015d}" for i in range(200)]), 40, 5)
    known.save(tmp_path / "known.npz")
    assert CloneGeography.load(tmp_path / "known.npz").block_geoid[7] == "000000000000007"


def test_damaged_and_foreign_files(tmp_path: Path) -> None:
    g = assign_geography(10, 2, 3)
    g.save(tmp_path / "geo.npz")
    data = (tmp_path / "geo.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.npz"):
        CloneGeography.load(tmp_path / "cut.npz")
    np.savez(tmp_path / "other.npz", x=np.arange(3))
    with pytest.raises(InputError, match="other.npz is not a clone geography"):
        CloneGeography.load(tmp_path / "other.npz")
    with pytest.raises(InputError, match="does not exist"):
        CloneGeography.load(tmp_path / "missing.npz")
    bad = dict(np.load(tmp_path / "geo.npz"))
    bad["cd_geoid"] = bad["cd_geoid"][:-1]
    np.savez(tmp_path / "short.npz", **bad)
    with pytest.raises(InputError, match="short.npz.*cd_geoid has 19 entries"):
        CloneGeography.load(tmp_path / "short.npz")
    objects = dict(np.load(tmp_path / "geo.npz"))
    objects["state_fips"] = np.array([object()] * 20, dtype=object)
    np.savez(tmp_path / "pickled.npz", **objects)
    with pytest.raises(InputError, match="pickled.npz"):
        CloneGeography.load(tmp_path / "pickled.npz")
