"""Upstream's path of `policyengine_us_data.kernel.entity_clone`.

Importing this module gives the moved module itself, so patches by either dotted path (upstream's tests patch
`policyengine_us_data.calibration.entity_clone`) reach the code that runs.
"""

import sys

import policyengine_us_data.kernel.entity_clone as _module

sys.modules[__name__] = _module
