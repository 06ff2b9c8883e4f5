"""The embedded default target database: realistic targets for the embedded synthetic dataset.

A newcomer without PolicyEngine's `policy_data.db` still needs targets in upstream's schema. This
module simulates the default synthetic dataset (`generate_synthetic()`) with the real policyengine-us
and writes its weighted totals, each times a seeded lognormal perturbation (sigma 0.05, so the
targets are near but not equal to what the data already gives), at three levels:

- national: the weighted sum over all households;
- state (51): the weighted sum over households whose state is that state (zero totals are left out:
  a small state may hold no TANF household in 1,000 records, and states without income tax have none);
- congressional district (436): the district's state total split in equal shares over the state's
  districts, each share with its own perturbation. The synthetic data has no district of its own, so
  this is the simplest split that keeps the districts of a state summing to about the state total.

Cell rules follow domain.md (any member qualifies, then sum to the household). Medicaid enrolment is
`person_count` with domain `medicaid_enrolled == True`: a count of enrolled people, uprated by
population, where the variable `medicaid_enrolled` itself would be uprated by CPI as if it were
dollars. Reform rows (reform_id > 0) hold household income tax with the variable neutralised minus
baseline. A few targets sit at 2022, 2023 or 2025 (values moved there with the same uprating
`load_targets` applies) so period choice and uprating are exercised; two rows are inactive.

Run `python -m policyengine_us_data.pipeline.default_targets [--out PATH]` to (re)build it; the
database records a fingerprint of the synthetic dataset so a test notices when it goes stale.
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from policyengine_us_data.kernel.cell_rules import household_values
from policyengine_us_data.datasets.geography import SEATS
from policyengine_us_data.targets.target_db import StratumSpec, TargetSpec, write_database
from policyengine_us_data.targets.targets import Constraint
from policyengine_us_data.errors import TargetError
from policyengine_us_data.utils.hashing import dataset_sha256

logger = logging.getLogger(__name__)

DEFAULT_TARGETS_DB = Path(__file__).resolve().parent.parent / "storage" / "default_targets.db"
SEED = 20_240_601
SIGMA = 0.05
META_TABLE = "default_targets_meta"
AGE_BANDS = ((0, 18), (18, 65), (65, None))
AGI_BANDS = ((None, 25_000), (25_000, 75_000), (75_000, 200_000), (200_000, None))
REFORMS = {1: "eitc", 2: "ctc"}  # salt_deduction is zero here: no synthetic household itemises
PERSON_VARIABLES = ("age", "adjusted_gross_income", "snap", "medicaid_enrolled")
NATIONAL, STATE, DISTRICT = "national", "state", "district"


def default_targets_path() -> Path:
    """The committed default database; a clear error if it has not been generated."""
    if not DEFAULT_TARGETS_DB.is_file():
        raise TargetError(f"the default target database {DEFAULT_TARGETS_DB} is missing; build it with "
                          "`python -m policyengine_us_data.pipeline.default_targets`.")
    return DEFAULT_TARGETS_DB


@dataclass(frozen=True)
class Spec:
    """One target family: a variable and domain, the levels it appears at and its periods there."""

    variable: str
    domain: tuple[Constraint, ...] = ()
    levels: tuple[str, ...] = (NATIONAL, STATE)
    reform_id: int = 0
    periods: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (level, periods); default: the data's year


def _band(variable: str, low: int | None, high: int | None) -> tuple[Constraint, ...]:
    lower = () if low is None or low == 0 and variable == "age" else (Constraint(variable, ">=", low),)
    upper = () if high is None else (Constraint(variable, "<", high),)
    return lower + upper


def target_specs() -> list[Spec]:
    """Every target family of the default database."""
    everywhere = (NATIONAL, STATE, DISTRICT)
    specs = [Spec("household_count", levels=everywhere)]
    specs += [Spec("person_count", _band("age", lo, hi), everywhere, periods=((NATIONAL, (2022,)),))
              for lo, hi in AGE_BANDS]
    specs += [Spec("employment_income"), Spec("adjusted_gross_income", levels=everywhere)]
    for lo, hi in AGI_BANDS:
        band = _band("adjusted_gross_income", lo, hi)
        specs += [Spec("adjusted_gross_income", band), Spec("tax_unit_count", band)]
    specs += [
        Spec("income_tax", periods=((NATIONAL, (2022, 2023, 2024)),)),
        Spec("state_income_tax"),
        Spec("eitc"),
        Spec("snap", periods=((STATE, (2023,)),)),
        Spec("household_count", (Constraint("snap", ">", 0),), everywhere, periods=((STATE, (2023,)),)),
        Spec("ssi"),
        Spec("tanf"),
        Spec("person_count", (Constraint("medicaid_enrolled", "==", True),)),
        Spec("aca_ptc", periods=((NATIONAL, (2025,)),)),
    ]
    specs += [Spec(variable, levels=(NATIONAL,), reform_id=rid) for rid, variable in REFORMS.items()]
    return specs


class _Builder:
    """Accumulates strata (one per distinct constraint set) and targets in a fixed order."""

    def __init__(self, year: int, uprating: Callable[[str, int, int], float], seed: int) -> None:
        self.year, self.uprating = year, uprating
        self.rng = np.random.default_rng(seed)
        self.strata: dict[tuple, StratumSpec] = {}
        self.targets: list[TargetSpec] = []
        self.source = f"synthetic default dataset, seed {seed}, lognormal perturbation sigma {SIGMA}"

    def stratum(self, geo: tuple[tuple[str, str, int], ...], domain: tuple[Constraint, ...]) -> int:
        key = geo + tuple((c.variable, c.operation, c.value) for c in domain)
        if key not in self.strata:
            parent = None
            if domain:
                parent = self.stratum(geo, ())
            elif geo:
                parent = self.stratum(geo[:-1], ())
            self.strata[key] = StratumSpec(len(self.strata) + 1, key, parent)
        return self.strata[key].stratum_id

    def add(self, spec: Spec, stratum_id: int, level: str, total: float, note: str = "") -> None:
        if total == 0.0:
            return
        value = total * float(np.exp(SIGMA * self.rng.standard_normal()))
        periods = dict(spec.periods).get(level, (self.year,))
        for period in periods:
            moved = value / self.uprating(spec.variable, period, self.year)
            self.targets.append(TargetSpec(len(self.targets) + 1, spec.variable, period, stratum_id, moved,
                                           spec.reform_id, True, None, self.source, f"{level} {note}".strip()))


def build_targets(specs: Sequence[Spec], values: dict[Spec, np.ndarray], weights: np.ndarray,
                  state_fips: np.ndarray, year: int, uprating: Callable[[str, int, int], float],
                  seed: int = SEED) -> tuple[list[StratumSpec], list[TargetSpec]]:
    """Strata and targets from per-household values (pure numpy: testable without policyengine-us)."""
    builder = _Builder(year, uprating, seed)
    states = sorted(SEATS)
    index = np.searchsorted(states, state_fips)
    for spec in specs:
        weighted = weights * values[spec]
        if NATIONAL in spec.levels:
            builder.add(spec, builder.stratum((), spec.domain), NATIONAL, float(weighted.sum()))
        by_state = np.bincount(index, weights=weighted, minlength=len(states))
        for fips, total in zip(states, by_state):
            geo = (("state_fips", "==", fips),)
            if STATE in spec.levels:
                builder.add(spec, builder.stratum(geo, spec.domain), STATE, float(total))
            if DISTRICT in spec.levels:
                for district in range(1, SEATS[fips] + 1):
                    cd = geo + (("congressional_district_geoid", "==", fips * 100 + district),)
                    builder.add(spec, builder.stratum(cd, spec.domain), DISTRICT, float(total) / SEATS[fips],
                                "(equal share of the state total)")
    _add_inactive(builder)
    return list(builder.strata.values()), builder.targets


def _add_inactive(builder: _Builder) -> None:
    """Two rows readers must skip: a meaningless Medicaid dollar total and an old TANF figure."""
    national = builder.stratum((), ())
    california = builder.stratum((("state_fips", "==", 6),), ())
    for variable, stratum, period, note in (
        ("medicaid", national, builder.year, "inactive: Medicaid dollars are a calibrated spending total"),
        ("tanf", california, 2020, "inactive: superseded"),
    ):
        builder.targets.append(TargetSpec(len(builder.targets) + 1, variable, period, stratum, 1.0, 0, False,
                                          None, builder.source, note))


def simulate(data: Any) -> tuple[dict[Spec, np.ndarray], Any]:
    """Run policyengine-us on the dataset; per-household values of every spec and the simulator."""
    from policyengine_us_data.kernel.simulator import PolicyEngineSimulator, SimulationRequest

    simulator = PolicyEngineSimulator()
    specs = target_specs()
    request = SimulationRequest(
        target_variables=tuple(sorted({s.variable for s in specs if not s.reform_id
                                       and not s.variable.endswith("_count")})),
        person_variables=PERSON_VARIABLES,
        reform_variables=tuple(REFORMS.values()),
    )
    out = simulator.compute(data, request)
    values = {spec: household_values(spec, data, out, simulator.entity_of) for spec in specs}
    for spec in specs:
        if spec.reform_id and not np.any(values[spec]):
            raise TargetError(f"reform row for {spec.variable} is zero on the default dataset; choose "
                              "another reform variable in REFORMS.")
    return values, simulator


def generate(out: str | Path = DEFAULT_TARGETS_DB, *, seed: int = SEED) -> Path:
    """Simulate the default synthetic dataset and write the default target database to `out`."""
    from policyengine_us_data.targets.uprating import policyengine_uprating
    from policyengine_us_data.datasets.synthetic import generate_synthetic

    data = generate_synthetic()
    values, simulator = simulate(data)
    uprating = policyengine_uprating(simulator.system)
    weights = np.asarray(data.arrays["household_weight"], float)
    state_fips = np.asarray(data.arrays["state_fips"])
    strata, targets = build_targets(target_specs(), values, weights, state_fips, data.period, uprating, seed)
    meta = {"dataset_fingerprint": dataset_sha256(data),  # the same content hash shard lineage uses
            "seed": str(seed), "year": str(data.period), "sigma": str(SIGMA)}
    write_database(out, strata, targets, meta=(META_TABLE, meta))
    logger.info("wrote %d targets in %d strata to %s", len(targets), len(strata), out)
    return Path(out)


def read_meta(path: str | Path) -> dict[str, str]:
    """The generator's key/value record of a default database (empty for other databases)."""
    conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if META_TABLE not in tables:
            return {}
        return dict(conn.execute(f"SELECT key, value FROM {META_TABLE}").fetchall())
    finally:
        conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_TARGETS_DB), help="where to write the database")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of the perturbation")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = generate(args.out, seed=args.seed)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
