"""The pipeline's one Modal app: a coordinator that builds the matrix and the chunk workers it fans out to.

Deploy with `modal deploy policyengine_us_data/modal_app/app.py`; run with
`modal run policyengine_us_data/modal_app/app.py --chunked-matrix --parallel --num-workers 50`.
No new apps or volumes: everything lives in `policyengine-us-data-pipeline` and the existing staging
volume, under `/staging/{run_id}/` (state/, matrix_chunks/, the package and report.md). Workers reuse
the H5 workers' `max_containers=50` ceiling.

Importing this module needs modal but no credentials: the app, the volume handle and the functions
are all lazy until something runs.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import Any

import modal

from policyengine_us_data.calibration.chunk_dispatch.base import traceback_excerpt, validate_run_id
from policyengine_us_data.calibration.chunk_dispatch.worker import CHUNK_DIRNAME, run_worker_batch
from policyengine_us_data.errors import StaleWorkerCode
from policyengine_us_data.modal_app import (
    APP_NAME,
    MAX_CONTAINERS,
    STAGING_MOUNT,
    STAGING_VOLUME_NAME,
)
from policyengine_us_data.modal_app.images import image

# One worker runs a contiguous batch (~4-5 production chunks of 25,000 columns, ~4 min each).
WORKER_TIMEOUT_S = 4 * 3600
WORKER_CPU = 2.0
# Modal reruns an input whose container crashed (OOM-kill, host failure); the worker skips committed shards.
WORKER_RETRIES = 2
WORKER_MEMORY_MB = 32 * 1024  # a 25,000-column chunk with two reform rows peaked at 12.7 GB (bench_kernel); headroom for real households
# The coordinator keeps upstream's ceiling: 8 CPU / 64 GB / 14 h.
COORDINATOR_TIMEOUT_S = 14 * 3600
COORDINATOR_CPU = 8.0
COORDINATOR_MEMORY_MB = 64 * 1024
REPORT_FILE = "report.md"
PACKAGE_DIRNAME = "package"
CALIBRATION_MODULE = "policyengine_us_data.calibration.unified_calibration"

app = modal.App(APP_NAME)
staging_volume = modal.Volume.from_name(STAGING_VOLUME_NAME, create_if_missing=False)


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


def pipeline_cli_args(
    *,
    chunked_matrix: bool,
    parallel: bool,
    num_workers: int,
    n_clones: int,
    chunk_size: int,
) -> list[str]:
    """The `unified_calibration` flags for the workflow's inputs (one flag per input)."""
    return [
        "--chunked-matrix" if chunked_matrix else "--no-chunked-matrix",
        "--parallel" if parallel else "--no-parallel",
        "--num-matrix-workers",
        str(int(num_workers)),
        "--n-clones",
        str(int(n_clones)),
        "--chunk-size",
        str(int(chunk_size)),
    ]


def coordinator_argv(run_id: str, cli_args: list[str], root: str = STAGING_MOUNT) -> list[str]:
    """Pin the run's locations on the volume: shards where the workers write them, the package beside."""
    run = Path(root) / validate_run_id(run_id)
    return [
        *cli_args,
        "--run-id",
        run_id,
        "--chunk-dir",
        str(run / CHUNK_DIRNAME),
        "--package-output",
        str(run / PACKAGE_DIRNAME / "calibration_package.pkl"),
        "--output-dir",
        str(run / "output"),
    ]


def find_report(run: Path) -> str:
    """The run's report.md (the newest one under the run directory), or a note that none was written."""
    found = sorted(run.rglob(REPORT_FILE), key=lambda p: p.stat().st_mtime) if run.is_dir() else []
    if not found:
        return f"_No {REPORT_FILE} was written under `{run}`._\n"
    return found[-1].read_text()


@app.function(
    image=image,
    volumes={STAGING_MOUNT: staging_volume},
    timeout=COORDINATOR_TIMEOUT_S,
    cpu=COORDINATOR_CPU,
    memory=COORDINATOR_MEMORY_MB,
)
def build_matrix(run_id: str, cli_args: list[str]) -> dict[str, Any]:
    """The matrix-building step; with `--parallel` its ModalChunkDispatcher fans chunks out from here."""
    import importlib

    validate_run_id(run_id)
    root = os.environ.get("PE_STAGING_ROOT") or STAGING_MOUNT
    remote = in_modal_container()
    if remote:
        staging_volume.reload()
    argv = coordinator_argv(run_id, list(cli_args), root)
    status, error = 0, ""
    try:
        result = importlib.import_module(CALIBRATION_MODULE).main(argv)
        status = int(result or 0)
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except Exception:  # noqa: BLE001 - report what failed; the caller decides
        status, error = 1, traceback.format_exc(limit=20)
    finally:
        if remote:
            staging_volume.commit()
    return {"run_id": run_id, "status": status, "argv": argv, "error": error,
            "report": find_report(Path(root) / run_id)}


@app.local_entrypoint()
def main(
    chunked_matrix: bool = True,
    parallel: bool = True,
    num_workers: int = 50,
    n_clones: int = 430,
    chunk_size: int = 25_000,
    run_id: str = "",
    report_path: str = REPORT_FILE,
) -> None:
    """`modal run .../app.py`: run the coordinator remotely, save its report.md here, fail if it failed."""
    from policyengine_us_data.calibration.chunk_dispatch.modal_backend import new_run_id

    rid = validate_run_id(run_id) if run_id else new_run_id()
    args = pipeline_cli_args(
        chunked_matrix=chunked_matrix,
        parallel=parallel,
        num_workers=num_workers,
        n_clones=n_clones,
        chunk_size=chunk_size,
    )
    print(f"run {rid}: unified_calibration {' '.join(args)}")
    outcome = build_matrix.remote(rid, args)
    Path(report_path).write_text(outcome["report"])
    print(f"report written to {report_path}")
    if outcome["status"] != 0:
        raise SystemExit(f"pipeline run {rid} failed (status {outcome['status']}):\n{outcome['error']}")
