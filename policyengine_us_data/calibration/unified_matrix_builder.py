"""Upstream's path of `policyengine_us_data.compat.unified_matrix_builder`.

Importing this module gives the moved module itself, so patches by either dotted path (upstream's tests patch
`policyengine_us_data.calibration.unified_matrix_builder`) reach the code that runs.
"""

import sys

import policyengine_us_data.compat.unified_matrix_builder as _module

sys.modules[__name__] = _module
