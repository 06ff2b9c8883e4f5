"""The coordinator's work, free of Modal: check the inputs, run the one pipeline on the volume, report.

There is one way a matrix gets built: the runner's five steps. On Modal the coordinator runs that runner
(`python -m commands.cli --backend modal`), so its dispatch step fans the chunks out to the workers and
keeps the shards on the staging volume, `/staging/{run_id}/matrix_chunks/`. It is a subprocess because
this package may not import `commands/` (the layers point down); the runner's exit code is the run's
status, and a crash in it cannot take the coordinator's lease and report with it.

The runner's own run directory is on the coordinator's local disk, and its outputs (matrix, verify
report, run report, logs) are published to `/staging/{run_id}/run/` when it ends. The runner's checkpoints
are hard links guarded by an flock; a volume copies files into each container (links and locks do not
survive a commit and a reload; the emulated Modal shows the runner then refusing its own checkpoints).
Resuming does not need that directory: a rerun with the same run id rebuilds the dataset and constraint
steps (minutes) and reuses every shard on the volume whose lineage matches (hours).

Inputs are files on a volume: `artifacts:PATH` on the `pipeline-artifacts` volume (where upstream keeps
the enhanced CPS and `policy_data.db`), or `staging:inputs/<sha256>-<name>`, a local file the entry point
uploaded once under the run id (`stage_local_input`). Synthetic households only when asked for.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from policyengine_us_data.dispatch.base import validate_run_id
from policyengine_us_data.dispatch.worker import CHUNK_DIRNAME, STAGING_ROOT_ENV
from policyengine_us_data.errors import InputError
from policyengine_us_data.modal_app import ARTIFACTS_MOUNT, ARTIFACTS_VOLUME_NAME, STAGING_MOUNT
from policyengine_us_data.utils.atomic import atomic_path
from policyengine_us_data.utils.hashing import file_sha256

RUNNER_COMMAND: tuple[str, ...] = (sys.executable, "-m", "commands.cli")
RUN_SUBDIR = "run"
INPUTS_DIRNAME = "inputs"
REPORT_FILE = "report.md"
ARTIFACTS = "artifacts:"
STAGED = "staging:"
ARTIFACTS_ROOT_ENV = "PE_ARTIFACTS_ROOT"
ERROR_TAIL_LINES = 40
SCRATCH_ENV = "PE_RUN_SCRATCH"
DEFAULT_SCRATCH = "/tmp/matrix-run"
# What the runner's run directory publishes to the volume (paths relative to it).
PUBLISHED = ("matrix", "verify", "report.md", "report.json", "report.png", "chunks/dispatch.json", ".runner/logs",
             ".runner/journal.json")


@dataclass(frozen=True)
class Roots:
    """Where the two volumes are in this process: the mounts, or directories named by the environment (tests)."""

    staging: Path
    artifacts: Path
    scratch: Path

    @classmethod
    def here(cls) -> "Roots":
        return cls(Path(os.environ.get(STAGING_ROOT_ENV) or STAGING_MOUNT),
                   Path(os.environ.get(ARTIFACTS_ROOT_ENV) or ARTIFACTS_MOUNT),
                   Path(os.environ.get(SCRATCH_ENV) or DEFAULT_SCRATCH))


def resolve_input(spec: str, flag: str, run: Path, roots: Roots) -> Path:
    """The file an input spec names, which must exist; InputError naming the flag and the fix otherwise."""
    if spec.startswith(ARTIFACTS):
        base, rel = roots.artifacts, spec[len(ARTIFACTS):]
    elif spec.startswith(STAGED):
        base, rel = run, spec[len(STAGED):]
    else:
        raise InputError(f"{flag} {spec!r}: give a local file (the entry point uploads it) or "
                         f"{ARTIFACTS}PATH on the {ARTIFACTS_VOLUME_NAME} volume")
    parts = Path(rel.lstrip("/")).parts
    if not parts or ".." in parts:
        raise InputError(f"{flag} {spec!r}: name a file inside the volume, without '..'")
    path = base.joinpath(*parts)
    if not path.is_file():
        raise InputError(f"{flag} {spec!r}: no such file ({path}). Upload it to the {ARTIFACTS_VOLUME_NAME} "
                         "volume or pass a local file to `modal run ... app.py`")
    return path


def runner_argv(run_id: str, runner_args: Sequence[str], *, dataset: str = "", db: str = "",
                synthetic: bool = False, resume: bool = True, roots: Roots | None = None) -> list[str]:
    """The runner's command line for this run, after checking every input (nothing has changed yet)."""
    roots = roots or Roots.here()
    run = roots.staging / validate_run_id(run_id)
    if dataset and synthetic:
        raise InputError("--dataset and --synthetic exclude each other: pass one")
    if not dataset and not synthetic:
        raise InputError("no --dataset: pass the households (a local .h5, or artifacts:PATH on the "
                         f"{ARTIFACTS_VOLUME_NAME} volume), or --synthetic to build on generated households")
    if not resume and ((run / RUN_SUBDIR).exists() or (run / CHUNK_DIRNAME).exists()):
        raise InputError(f"run id {run_id!r} already has a run on the volume and --no-resume was given: "
                         "resume it (the default) or pick another --run-id")
    argv = ["--run-dir", str(roots.scratch / run_id), "--to", "assemble", "--run-id", run_id, *runner_args]
    if dataset:
        argv += ["--dataset", str(resolve_input(dataset, "--dataset", run, roots))]
    if db:
        argv += ["--db", str(resolve_input(db, "--db", run, roots))]
    return argv


def run_runner(command: Sequence[str], env: dict[str, str]) -> tuple[int, str]:
    """Run the runner, echoing its stderr to ours (the container log); return its exit code and stderr's tail."""
    tail: deque[str] = deque(maxlen=ERROR_TAIL_LINES)
    with subprocess.Popen(list(command), env=env, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            sys.stderr.write(line)
            tail.append(line)
    return proc.returncode, "".join(tail)


def publish_run(local: Path, run: Path) -> list[Path]:
    """Copy the runner's outputs from its local run directory to `{run}/run/` on the volume (atomically)."""
    published: list[Path] = []
    for rel in PUBLISHED:
        source = local / rel
        files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
        for path in files:
            if not path.is_file():
                continue
            dest = run / RUN_SUBDIR / path.relative_to(local)
            with atomic_path(dest) as tmp:
                shutil.copyfile(path, tmp)
            published.append(dest)
    return published


def find_report(run: Path) -> str:
    """The run's report.md, or a note that none was written."""
    report = run / RUN_SUBDIR / REPORT_FILE
    if not report.is_file():
        return f"_No {REPORT_FILE} was written under `{run / RUN_SUBDIR}`._\n"
    return report.read_text()


def outcome(run_id: str, status: int, argv: list[str], error: str, run: Path) -> dict[str, Any]:
    return {"run_id": run_id, "status": int(status), "argv": argv, "error": error, "report": find_report(run)}


def stage_local_input(volume: Any, run_id: str, path: str | os.PathLike, flag: str) -> str:
    """Upload a local input once to `/{run_id}/inputs/<sha256[:16]>-<name>` on the staging volume; its spec.

    The content hash in the name makes a second upload of the same bytes a no-op and a changed file a new
    name (so the runner sees a changed input and rebuilds what depends on it).
    """
    local = Path(path)
    if not local.is_file():
        raise InputError(f"{flag} {path}: no such local file (or use {ARTIFACTS}PATH for the "
                         f"{ARTIFACTS_VOLUME_NAME} volume)")
    name = f"{file_sha256(local)[:16]}-{local.name}"
    remote = f"/{validate_run_id(run_id)}/{INPUTS_DIRNAME}/{name}"
    try:
        present = {Path(entry.path).name for entry in volume.listdir(f"/{run_id}/{INPUTS_DIRNAME}")}
    except Exception:  # noqa: BLE001 - no inputs directory yet (modal raises NotFoundError)
        present = set()
    if name not in present:
        with volume.batch_upload() as batch:
            batch.put_file(str(local), remote)
    return f"{STAGED}{INPUTS_DIRNAME}/{name}"


def input_spec(volume: Any, run_id: str, value: str, flag: str) -> str:
    """`artifacts:PATH` passes through; anything else is a local file to upload."""
    if not value or value.startswith(ARTIFACTS):
        return value
    return stage_local_input(volume, run_id, value, flag)
