"""The Modal app of the pipeline: one app, one staging volume, workers that run the chunk kernel.

Import-safe on purpose: this package module holds only names (no `import modal`), so the chunk
dispatcher and tests can read them without Modal. `modal_app.app` and `modal_app.images` import
modal and define the app, image and functions.
"""

APP_NAME = "policyengine-us-data-pipeline"
WORKER_FUNCTION = "build_matrix_chunk_worker"
COORDINATOR_FUNCTION = "build_matrix"
# The existing staging volume (shared with the H5 area workers); no new volumes.
STAGING_VOLUME_NAME = "local-area-staging"
STAGING_MOUNT = "/staging"
# Upstream's artifacts volume (datasets, policy_data.db): the coordinator's inputs, read-only here.
ARTIFACTS_VOLUME_NAME = "pipeline-artifacts"
ARTIFACTS_MOUNT = "/pipeline-artifacts"
# Reused from the H5 workers' ceiling, not added on top of it.
MAX_CONTAINERS = 50
# Modal reruns an input whose container crashed (OOM-kill, host failure); the worker skips committed shards.
WORKER_RETRIES = 2
# A contiguous 25,000-column chunk peaked at 12.7 GB (bench_kernel), a state-major one at 3.6 GB (bench_chunk_plans); headroom for real households.
WORKER_MEMORY_MB = 32 * 1024
APP_FILE = "policyengine_us_data/modal_app/app.py"

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
