"""Upstream's `policyengine_us_data.db` module path: the target database's SQL objects."""
