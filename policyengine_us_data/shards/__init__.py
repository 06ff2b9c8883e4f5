"""Shards, chunk plans and results, lineage and the chunk manifest, and the streaming CSR assembly. Import-safe: nothing is imported here."""
