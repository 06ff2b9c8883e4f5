"""Upstream's `create_database_tables` names that callers and tests import: the `target_overview` view.

Only the view is offered; the tables themselves are written by `targets.target_db.write_database`
(upstream's schema) and read by `targets.target_db.read_database`, which ignore views.
"""

from __future__ import annotations

import sqlite3

_GEO_VALUE = """(SELECT MAX(c.value) FROM stratum_constraints AS c
        WHERE c.stratum_id = t.stratum_id AND c.constraint_variable = '{variable}')"""

TARGET_OVERVIEW_VIEW = f"""CREATE VIEW IF NOT EXISTS target_overview AS
SELECT
    t.target_id,
    t.stratum_id,
    t.variable,
    t.reform_id,
    t.value,
    t.period,
    t.active,
    CASE
        WHEN {_GEO_VALUE.format(variable='congressional_district_geoid')} IS NOT NULL THEN 'district'
        WHEN {_GEO_VALUE.format(variable='state_fips')} IS NOT NULL THEN 'state'
        ELSE 'national'
    END AS geo_level,
    COALESCE(
        {_GEO_VALUE.format(variable='congressional_district_geoid')},
        {_GEO_VALUE.format(variable='state_fips')},
        'US'
    ) AS geographic_id
FROM targets AS t;
"""
"""One row per target with its geographic level (district if its stratum constrains the district, else state
if it constrains the state, else national) and geographic id, as upstream's view gives them."""


def create_or_replace_views(connection: sqlite3.Connection) -> None:
    """(Re)create the `target_overview` view on an open SQLite connection."""
    connection.execute("DROP VIEW IF EXISTS target_overview")
    connection.execute(TARGET_OVERVIEW_VIEW)
    connection.commit()
