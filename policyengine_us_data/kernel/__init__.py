"""The per-chunk kernel and what it runs on: the simulator seam, cell rules, take-up, the build state. Import-safe: nothing is imported here."""
