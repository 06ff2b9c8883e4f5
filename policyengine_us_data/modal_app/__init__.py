"""The Modal app of the pipeline: one app, one staging volume, workers that run the chunk kernel.

Import-safe on purpose: this package module holds only names (no `import modal`; they are defined in
`dispatch.modal_names`, below both the dispatcher and the app), so tests can read them
without Modal. `modal_app.app` and `modal_app.images` import modal and define the app, image and functions.
"""

from policyengine_us_data.dispatch.modal_names import (
    APP_FILE,
    APP_NAME,
    ARTIFACTS_MOUNT,
    ARTIFACTS_VOLUME_NAME,
    COORDINATOR_FUNCTION,
    MAX_CONTAINERS,
    STAGING_MOUNT,
    STAGING_VOLUME_NAME,
    WORKER_FUNCTION,
    WORKER_MEMORY_MB,
    WORKER_RETRIES,
)

__all__ = [
    "APP_FILE",
    "ARTIFACTS_MOUNT",
    "ARTIFACTS_VOLUME_NAME",
    "APP_NAME",
    "COORDINATOR_FUNCTION",
    "MAX_CONTAINERS",
    "STAGING_MOUNT",
    "STAGING_VOLUME_NAME",
    "WORKER_FUNCTION",
    "WORKER_MEMORY_MB",
    "WORKER_RETRIES",
]
