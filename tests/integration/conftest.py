"""Session fixtures for tests that use the real policyengine-us.

Importing policyengine-us costs about 40 s per process, so it happens once per test session
here and every integration test shares it.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def pe_system():
    """The loaded policyengine-us tax-benefit system (imported once per session)."""
    from policyengine_us.system import system

    return system


@pytest.fixture(scope="session")
def pe_simulator():
    """The real simulator behind the kernel's seam, shared by every test in the session."""
    from policyengine_us_data.kernel.simulator import get_simulator

    return get_simulator("policyengine")
