"""What a build leaves behind: the matrix files, the calibration package and the run report.

Import-safe: submodules are imported by name (`outputs.matrix_files`, `outputs.report`); nothing
here imports pandas, matplotlib or policyengine-us.
"""
