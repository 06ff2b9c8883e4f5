"""The pipeline's one Modal app: a coordinator that builds the matrix and the chunk workers it fans out to.

Deploy with `modal deploy policyengine_us_data/modal_app/app.py`; run with
`modal run policyengine_us_data/modal_app/app.py --dataset artifacts:PATH --db artifacts:PATH --run-id R`.
The coordinator runs the pipeline's runner on `/staging/{run_id}/run` (coordinator.py); its dispatch step
fans the chunks out to `build_matrix_chunk_worker`, whose shards land in `/staging/{run_id}/matrix_chunks/`.
No new apps or volumes: `policyengine-us-data-pipeline`, the existing staging volume, and upstream's
`pipeline-artifacts` volume for the inputs. Workers reuse the H5 workers' `max_containers=50` ceiling.
Both functions are nonpreemptible, as upstream's are.

Importing this module needs modal but no credentials: the app, the volume handle and the functions
are all lazy until something runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import modal

from policyengine_us_data.dispatch.base import traceback_excerpt, validate_run_id
from policyengine_us_data.dispatch.lease import INHERITED_LEASE_ENV, RunLease, VolumeSync
from policyengine_us_data.dispatch.worker import run_worker_batch
from policyengine_us_data.errors import InputError, RunLeaseHeld, StaleWorkerCode
from policyengine_us_data.modal_app import (
    ARTIFACTS_MOUNT,
    ARTIFACTS_VOLUME_NAME,
    APP_NAME,
    MAX_CONTAINERS,
    WORKER_MEMORY_MB,
    WORKER_RETRIES,
    STAGING_MOUNT,
    STAGING_VOLUME_NAME,
)
from policyengine_us_data.modal_app.coordinator import (
    REPORT_FILE,
    RUNNER_COMMAND,
    STAGING_ROOT_ENV,
    Roots,
    input_spec,
    outcome,
    publish_run,
    run_runner,
    runner_argv,
)
from policyengine_us_data.modal_app.images import image

# One worker runs a contiguous batch (~4-5 production chunks of 25,000 columns, ~4 min each).
WORKER_TIMEOUT_S = 4 * 3600
WORKER_CPU = 2.0
# The coordinator keeps upstream's ceiling: 8 CPU / 64 GB / 14 h.
COORDINATOR_TIMEOUT_S = 14 * 3600
COORDINATOR_CPU = 8.0
COORDINATOR_MEMORY_MB = 64 * 1024

app = modal.App(APP_NAME)
staging_volume = modal.Volume.from_name(STAGING_VOLUME_NAME, create_if_missing=False)
# Upstream keeps the enhanced CPS and policy_data.db here; the coordinator reads inputs from it.
artifacts_volume = modal.Volume.from_name(ARTIFACTS_VOLUME_NAME, create_if_missing=False)


def in_modal_container() -> bool:
    """True inside a running Modal function; False for `.local()` calls and tests."""
    return not modal.is_local()


def _failed_outcomes(chunk_ids: list[int], exc: BaseException, fatal: bool = False) -> list[dict[str, Any]]:
    error = f"{type(exc).__name__}: {exc}"
    return [
        {"chunk_id": int(c), "ok": False, "error": error, "traceback": traceback_excerpt(exc),
         "worker": "", "start": 0.0, "end": 0.0, "fatal": fatal}
        for c in chunk_ids
    ]


@app.function(
    image=image,
    volumes={STAGING_MOUNT: staging_volume},
    max_containers=MAX_CONTAINERS,
    timeout=WORKER_TIMEOUT_S,
    cpu=WORKER_CPU,
    memory=WORKER_MEMORY_MB,
    retries=WORKER_RETRIES,
    nonpreemptible=True,
)
def build_matrix_chunk_worker(
    run_id: str,
    chunk_ids: list[int],
    state_dir: str | None = None,
    staging_root: str | None = None,
    code_identity: str | None = None,
) -> list[dict[str, Any]]:
    """Run the chunk kernel for `chunk_ids` of `run_id`; one JSON-able outcome per chunk, never raises.

    Reads `/staging/{run_id}/state/` and `matrix_chunks/plans.json`, writes `matrix_chunks/chunk_XXXXXX.npz`
    and commits the volume after every chunk, skips chunks whose shards already verify (a retried or
    preempted input), and refuses to run under a `code_identity` other than its own (a stale deploy).
    `staging_root` (or $PE_STAGING_ROOT) points a `.local()` call at a plain directory.
    """
    validate_run_id(run_id)
    ids = [int(c) for c in chunk_ids]
    remote = in_modal_container()
    try:
        if remote:
            staging_volume.reload()
        return run_worker_batch(run_id, ids, root=staging_root, state_dir=state_dir, expected_code=code_identity,
                                after_chunk=staging_volume.commit if remote else None)
    except StaleWorkerCode as exc:
        return _failed_outcomes(ids, exc, fatal=True)
    except Exception as exc:  # noqa: BLE001 - setup failures become per-chunk errors too
        return _failed_outcomes(ids, exc)
    finally:
        if remote:
            staging_volume.commit()


def runner_args(*, parallel: bool, num_workers: int, n_clones: int, chunk_size: int,
                target_households: int = 0) -> list[str]:
    """The runner's flags for the entry point's (and the workflow's) inputs, one flag per input.

    `parallel` fans the chunks out over Modal workers; without it the coordinator's own CPUs run them.
    """
    args = ["--backend", "modal" if parallel else "local", "--num-matrix-workers", str(int(num_workers)),
            "--n-clones", str(int(n_clones)), "--chunk-size", str(int(chunk_size))]
    if target_households:
        args += ["--target-households", str(int(target_households))]
    return args


@app.function(
    image=image,
    volumes={STAGING_MOUNT: staging_volume, ARTIFACTS_MOUNT: artifacts_volume},
    timeout=COORDINATOR_TIMEOUT_S,
    cpu=COORDINATOR_CPU,
    memory=COORDINATOR_MEMORY_MB,
    nonpreemptible=True,
)
def build_matrix(run_id: str, args: list[str], dataset: str = "", db: str = "", synthetic: bool = False,
                 resume: bool = True) -> dict[str, Any]:
    """Run the pipeline's runner under the run id's lease; its outputs land in `/staging/{run_id}/run/`.

    Status: the runner's exit code (0 done, 1 a step failed, 2 bad input), or 2 for bad inputs found here
    and 3 when another live coordinator holds the run id. Nothing on the volume changes before the inputs
    check out and the lease is ours. Rerunning with the same run id resumes (finished chunks are kept).
    """
    validate_run_id(run_id)
    roots = Roots.here()
    run = roots.staging / run_id
    remote = in_modal_container()
    if remote:
        staging_volume.reload()
    try:
        argv = runner_argv(run_id, args, dataset=dataset, db=db, synthetic=synthetic, resume=resume, roots=roots)
    except InputError as exc:
        return outcome(run_id, 2, [], str(exc), run)
    sync = VolumeSync(staging_volume if remote else None)
    lease = RunLease(run, run_id, sync)
    try:
        lease.acquire()
    except RunLeaseHeld as exc:
        return outcome(run_id, 3, argv, str(exc), run)
    try:
        env = {**os.environ, STAGING_ROOT_ENV: str(roots.staging), INHERITED_LEASE_ENV: lease.identity["holder"]}
        status, tail = run_runner([*RUNNER_COMMAND, *argv], env)
        publish_run(roots.scratch / run_id, run)
    finally:
        lease.release()
        sync.commit()
    return outcome(run_id, status, argv, tail if status else "", run)


def report_text(result: dict[str, Any]) -> str:
    """The run's report, headed by the failure (status and the runner's last lines) when it failed."""
    if result["status"] == 0:
        return result["report"]
    return (f"**Run `{result['run_id']}` failed (status {result['status']}).**\n\n```\n{result['error'].strip()}\n"
            f"```\n\n{result['report']}")


@app.local_entrypoint()
def main(
    dataset: str = "",
    db: str = "",
    synthetic: bool = False,
    run_id: str = "",
    resume: bool = True,
    parallel: bool = True,
    num_workers: int = 50,
    n_clones: int = 430,
    chunk_size: int = 25_000,
    target_households: int = 0,
    report_path: str = REPORT_FILE,
) -> None:
    """`modal run .../app.py --dataset X --db Y --run-id R`: upload local inputs once, run the coordinator
    (waiting for it), save its report.md here, exit non-zero if it failed."""
    from policyengine_us_data.dispatch.modal_backend import new_run_id

    rid = validate_run_id(run_id) if run_id else new_run_id()
    inputs = {"dataset": input_spec(staging_volume, rid, dataset, "--dataset"),
              "db": input_spec(staging_volume, rid, db, "--db")}
    args = runner_args(parallel=parallel, num_workers=num_workers, n_clones=n_clones, chunk_size=chunk_size,
                       target_households=target_households)
    print(f"run {rid}: dataset={inputs['dataset'] or '(synthetic)'} db={inputs['db'] or '(embedded)'} "
          f"runner {' '.join(args)}")
    result = build_matrix.remote(rid, args, synthetic=synthetic, resume=resume, **inputs)
    Path(report_path).write_text(report_text(result))
    print(f"report written to {report_path}")
    if result["status"] != 0:
        raise SystemExit(f"pipeline run {rid} failed (status {result['status']}):\n{result['error']}")
