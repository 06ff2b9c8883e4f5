"""The body of a remote chunk worker, kept free of Modal so it runs (and is tested) anywhere.

Layout of one run on the staging volume (the coordinator writes `state/` and `plans.json`; workers
write the shards):

    {root}/{run_id}/state/                         build state (JSON / npz / h5, never pickle)
    {root}/{run_id}/matrix_chunks/plans.json       every ChunkPlan of the run
    {root}/{run_id}/matrix_chunks/chunk_XXXXXX.npz one shard per chunk
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

from policyengine_us_data.dispatch.base import (
    Kernel,
    default_kernel,
    run_outcome,
    validate_run_id,
    worker_name,
)
from policyengine_us_data.shards.chunk_plan import ChunkPlan
from policyengine_us_data.shards.shards import shard_path
from policyengine_us_data.errors import InputError, StaleWorkerCode
from policyengine_us_data.utils.atomic import atomic_write_json
from policyengine_us_data.utils.code_identity import code_identity

DEFAULT_STAGING_ROOT = "/staging"
STAGING_ROOT_ENV = "PE_STAGING_ROOT"
STATE_DIRNAME = "state"
CHUNK_DIRNAME = "matrix_chunks"
PLANS_FILE = "plans.json"
PLANS_FORMAT = 1


def staging_root(explicit: str | os.PathLike | None = None) -> Path:
    """Where the staging volume is: an explicit root, else $PE_STAGING_ROOT, else /staging."""
    return Path(explicit or os.environ.get(STAGING_ROOT_ENV) or DEFAULT_STAGING_ROOT)


def run_dir(root: str | os.PathLike, run_id: str) -> Path:
    return Path(root) / validate_run_id(run_id)


def chunk_dir(root: str | os.PathLike, run_id: str) -> Path:
    return run_dir(root, run_id) / CHUNK_DIRNAME


def volume_plans(plans: Sequence[ChunkPlan], root: str | os.PathLike, run_id: str) -> list[ChunkPlan]:
    """The same plans with shard paths moved to `{root}/{run_id}/matrix_chunks/chunk_XXXXXX.npz`."""
    where = chunk_dir(root, run_id)
    return [replace(plan, shard_path=str(shard_path(where, plan.chunk_id))) for plan in plans]


def write_plans(plans: Sequence[ChunkPlan], root: str | os.PathLike, run_id: str) -> Path:
    """Publish the run's plans for the workers (atomic JSON)."""
    path = chunk_dir(root, run_id) / PLANS_FILE
    atomic_write_json(path, {"format": PLANS_FORMAT, "run_id": run_id, "plans": [p.to_json() for p in plans]})
    return path


def read_plans(root: str | os.PathLike, run_id: str) -> dict[int, ChunkPlan]:
    """The run's plans by chunk id, with shard paths re-rooted at this process's view of the volume."""
    path = chunk_dir(root, run_id) / PLANS_FILE
    try:
        payload = json.loads(path.read_text())
        plans = [ChunkPlan.from_json(obj) for obj in payload["plans"]]
    except FileNotFoundError:
        raise InputError(f"no chunk plans at {path}: the coordinator must write them before spawning workers") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"chunk plans {path} are unreadable ({exc}): rerun the coordinator") from None
    return {plan.chunk_id: plan for plan in volume_plans(plans, root, run_id)}


def check_code(expected: str | None) -> None:
    """Refuse to run chunks for a coordinator whose code differs from this worker's (a stale deploy)."""
    if not expected:
        return
    mine = code_identity()
    if mine != expected:
        raise StaleWorkerCode(
            f"this worker runs code {mine[:12]}, the coordinator runs {expected[:12]}: the deployed app is "
            "stale. Redeploy (`modal deploy policyengine_us_data/modal_app/app.py`) from the coordinator's "
            "checkout and rerun with the same --run-id."
        )


def _already_built(plan: ChunkPlan) -> bool:
    """A shard an earlier (crashed or preempted) attempt committed: whole, checksummed, this lineage."""
    from policyengine_us_data.dispatch.base import shard_verifies

    return shard_verifies(plan, deep=True)


def run_worker_batch(
    run_id: str,
    chunk_ids: Sequence[int],
    *,
    root: str | os.PathLike | None = None,
    state_dir: str | os.PathLike | None = None,
    kernel: Kernel | None = None,
    expected_code: str | None = None,
    after_chunk: Callable[[], None] | None = None,
    reuse: Callable[[ChunkPlan], bool] = _already_built,
) -> list[dict[str, Any]]:
    """Run the kernel for `chunk_ids`; one JSON-able outcome per chunk, errors gathered, not raised.

    A chunk whose shard already verifies is reported `reused`, not recomputed (a retried or preempted
    input restarts its whole batch). `after_chunk` runs after each computed chunk: in a container it
    commits the volume, so a crash later in the batch loses at most the chunk in flight.
    """
    check_code(expected_code)
    base = staging_root(root)
    plans = read_plans(base, run_id)
    state = str(state_dir or run_dir(base, run_id) / STATE_DIRNAME)
    kernel = kernel or default_kernel()
    outcomes: list[dict[str, Any]] = []
    for chunk_id in chunk_ids:
        plan = plans.get(int(chunk_id))
        if plan is None:
            outcomes.append(
                {"chunk_id": int(chunk_id), "ok": False, "error": f"chunk {chunk_id} is not in plans.json",
                 "traceback": "", "worker": "", "start": 0.0, "end": 0.0}
            )
            continue
        if reuse(plan):
            outcomes.append({"chunk_id": plan.chunk_id, "ok": True, "reused": True, "worker": worker_name()})
            continue
        Path(plan.shard_path).parent.mkdir(parents=True, exist_ok=True)
        outcomes.append(run_outcome(kernel, plan, state))
        if after_chunk is not None:
            after_chunk()
    return outcomes
