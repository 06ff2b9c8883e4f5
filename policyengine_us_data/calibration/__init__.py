"""Upstream's module paths, kept for its callers: each module here is a shim for the module that moved
(`compat/`, `kernel/`). Import-safe: nothing is imported here."""
