"""Household datasets: the PolicyEngine h5 layout, the synthetic default, subsetting and stratification.

Submodules are imported lazily by callers (`from policyengine_us_data.datasets.h5io import read_dataset`);
none of them imports policyengine-us.
"""

from policyengine_us_data.datasets.household_data import ENTITIES, HouseholdData

__all__ = ["ENTITIES", "HouseholdData"]
