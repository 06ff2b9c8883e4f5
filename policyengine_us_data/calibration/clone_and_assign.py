"""Upstream's path of `policyengine_us_data.compat.clone_and_assign`.

Importing this module gives the moved module itself, so patches by either dotted path (upstream's tests patch
`policyengine_us_data.calibration.clone_and_assign`) reach the code that runs.
"""

import sys

import policyengine_us_data.compat.clone_and_assign as _module

sys.modules[__name__] = _module
