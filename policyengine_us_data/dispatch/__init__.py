"""Where chunks run: in this process, in a forked local pool, or fanned out over Modal.

The coordinator hands plans to a `ChunkDispatcher` and gets results back as they arrive; it never
knows where a chunk ran. Importing this package is cheap: no policyengine-us, no modal (both are
imported lazily by the code paths that need them).
"""

from policyengine_us_data.dispatch.base import (
    ChunkDispatcher,
    ChunkFailure,
    DispatchReport,
    Kernel,
    remove_partial_shards,
    run_outcome,
    validate_run_id,
)
from policyengine_us_data.dispatch.local import LocalChunkDispatcher
from policyengine_us_data.dispatch.modal_backend import (
    ModalChunkDispatcher,
    contiguous_batches,
    lookup_worker,
    new_run_id,
)
from policyengine_us_data.dispatch.plan import (
    ProductionPlan,
    format_plans,
    plan_production,
)
from policyengine_us_data.dispatch.worker import (
    read_plans,
    run_worker_batch,
    staging_root,
    volume_plans,
    write_plans,
)

__all__ = [
    "ChunkDispatcher",
    "ChunkFailure",
    "DispatchReport",
    "Kernel",
    "LocalChunkDispatcher",
    "ModalChunkDispatcher",
    "ProductionPlan",
    "contiguous_batches",
    "format_plans",
    "lookup_worker",
    "new_run_id",
    "plan_production",
    "read_plans",
    "remove_partial_shards",
    "run_outcome",
    "run_worker_batch",
    "staging_root",
    "validate_run_id",
    "volume_plans",
    "write_plans",
]
