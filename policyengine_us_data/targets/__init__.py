"""Target rows: the database reader, their checks and uprating, and the constraint cache. Import-safe: nothing is imported here."""
