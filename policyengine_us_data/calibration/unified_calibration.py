"""Upstream's path of `policyengine_us_data.compat.unified_calibration` (`python -m policyengine_us_data.calibration.unified_calibration` runs its CLI).

Importing this module gives the moved module itself, so patches by either dotted path reach the same code.
"""

import sys

import policyengine_us_data.compat.unified_calibration as _module

if __name__ == "__main__":
    from policyengine_us_data.utils.cli_process import exit_now

    exit_now(_module.main())
else:
    sys.modules[__name__] = _module
