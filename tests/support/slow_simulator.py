"""The toy simulator, slowed down: each `compute` sleeps first, so a build lasts long enough to be raced
(tests/reliability/test_concurrency.py). Same values as ToySimulator, so the matrix is the toy one."""

from __future__ import annotations

import os
import time

from tests.support.toy_simulator import ToySimulator


class SlowToySimulator(ToySimulator):
    """ToySimulator that sleeps `DELAY` seconds per compute call (env SLOW_TOY_DELAY overrides the default)."""

    name = "tests.support.slow_simulator:SlowToySimulator"
    DELAY = float(os.environ.get("SLOW_TOY_DELAY", "0.5"))

    def compute(self, data, request):
        time.sleep(self.DELAY)
        return super().compute(data, request)
