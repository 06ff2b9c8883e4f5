"""Uprating factors for target values, taken from policyengine-us's own parameters.

A target measured in one year is moved to the build year so that every row describes the same
year as the simulation. Dollar amounts move with CPI-U (`gov.bls.cpi.cpi_u`); counts move with
the total population (`calibration.gov.census.populations.total`, CBO projections), the same
series policyengine-us itself uses to uprate its inputs. Both are read at January 1 of each year,
as policyengine-us does when it calls a parameter with a year. policyengine-us is imported only
when `policyengine_uprating()` is called, so this module stays import-safe.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Protocol

from policyengine_us_data.errors import TargetError

logger = logging.getLogger(__name__)

CPI_U_PARAMETER = "gov.bls.cpi.cpi_u"
POPULATION_PARAMETER = "calibration.gov.census.populations.total"


class UpratingFunction(Protocol):
    """`uprating(variable, from_period, to_year) -> factor`; the uprated value is value x factor."""

    def __call__(self, variable: str, from_period: int, to_year: int) -> float: ...


def is_count_variable(variable: str) -> bool:
    """Counts (`household_count`, `person_count`, ...) are uprated by population, not prices."""
    return variable.endswith("_count")


class SeriesUprating:
    """Uprating from two annual series: one for amounts, one (optional) for counts.

    `notes` records the decisions a reader of the target table should know (e.g. counts left
    as they are because no population series exists); `load_targets` copies them to the table.
    """

    def __init__(self, amount_series: Callable[[int], float], count_series: Callable[[int], float] | None,
                 *, amount_label: str = CPI_U_PARAMETER, count_label: str = POPULATION_PARAMETER) -> None:
        self._amount = amount_series
        self._count = count_series
        self._cache: dict[tuple[str, int], float] = {}
        self.notes: list[str] = [f"amounts uprated by {amount_label} (value at January 1)"]
        if count_series is None:
            message = ("no population parameter in policyengine-us: *_count targets are NOT uprated "
                       "(kept at their source period's value)")
            logger.warning(message)
            self.notes.append(message)
        else:
            self.notes.append(f"*_count targets uprated by {count_label} (value at January 1)")

    def _level(self, which: str, year: int) -> float:
        key = (which, year)
        if key not in self._cache:
            series = self._count if which == "count" else self._amount
            assert series is not None
            try:
                level = float(series(year))
            except (TypeError, ValueError) as exc:  # no value at that date (before the series starts)
                raise TargetError(f"no {which} uprating level for {year} ({exc}); the target's period lies "
                                  "outside the uprating series: mark it inactive or give it a later period.") from None
            self._cache[key] = level
        return self._cache[key]

    def __call__(self, variable: str, from_period: int, to_year: int) -> float:
        if from_period == to_year:
            return 1.0
        if is_count_variable(variable):
            if self._count is None:
                return 1.0
            which = "count"
        else:
            which = "amount"
        start = self._level(which, from_period)
        if start <= 0:
            raise TargetError(f"uprating series for {variable} is {start} in {from_period}; cannot uprate")
        return self._level(which, to_year) / start


def _parameter_series(parameters: Any, path: str) -> Callable[[int], float] | None:
    """The parameter at `path` as a year -> value function, or None if policyengine-us lacks it."""
    try:
        node = parameters.get_child(path)
    except Exception:  # policyengine-core raises its own error types for a missing child
        return None
    return lambda year: float(node(f"{int(year)}-01-01"))


def policyengine_uprating(system: Any = None) -> SeriesUprating:
    """The real uprating: CPI-U for amounts, total population for counts, from policyengine-us.

    Defaults to the system policyengine-us builds at import (building another costs ~30 s).
    """
    if system is None:
        from policyengine_us.system import system
    cpi = _parameter_series(system.parameters, CPI_U_PARAMETER)
    if cpi is None:
        raise RuntimeError(f"policyengine-us has no {CPI_U_PARAMETER} parameter; cannot uprate amounts")
    population = _parameter_series(system.parameters, POPULATION_PARAMETER)
    return SeriesUprating(cpi, population)
