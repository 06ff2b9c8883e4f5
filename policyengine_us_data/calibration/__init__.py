"""Calibration-matrix inputs and build steps. Import-safe: no imports here."""
