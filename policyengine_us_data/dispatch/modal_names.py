"""The names of the pipeline's Modal app, functions and volumes: the one place both the dispatcher (which looks
the deployed worker and the staging volume up) and the app itself (`modal_app`, which defines them) read them.
Kept below both, with no `import modal`, so the dispatcher never imports the app that imports it."""

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
# A contiguous 25,000-column chunk peaked at 10-12.7 GB, a state-major one at 3.6 GB (bench_chunk_plans);
# headroom for real households.
WORKER_MEMORY_MB = 32 * 1024
APP_FILE = "policyengine_us_data/modal_app/app.py"
