"""Upstream's public front ends (UnifiedMatrixBuilder, unified_calibration), above the pipeline. Import-safe: nothing is imported here."""
