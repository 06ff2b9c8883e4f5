"""Chunked builder of the PolicyEngine US calibration matrix.

Import-safe by design: nothing here imports policyengine-us, pandas, or reads files, so a
Modal container or a test can import the package cheaply. policyengine-us is imported lazily
inside the functions that simulate.
"""

__version__ = "0.1.0"
