"""`.github/workflows/pipeline.yaml`: every dispatch input reaches a CLI flag, all the way down."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import yaml

from policyengine_us_data.modal_app import app as app_module

ROOT = Path(__file__).resolve().parents[3]
WORKFLOW = ROOT / ".github" / "workflows" / "pipeline.yaml"
# workflow input -> flag of the `modal run ... app.py::main` entrypoint
ENTRYPOINT_FLAG = {
    "dataset": "--dataset",
    "db": "--db",
    "synthetic": "--synthetic",
    "resume": "--no-resume",
    "run_id": "--run-id",
    "parallel": "--no-parallel",
    "num_workers": "--num-workers",
    "n_clones": "--n-clones",
    "chunk_size": "--chunk-size",
    "target_households": "--target-households",
}
# entrypoint parameter -> runner flag
RUNNER_FLAG = {
    "parallel": "--backend",
    "num_workers": "--num-matrix-workers",
    "n_clones": "--n-clones",
    "chunk_size": "--chunk-size",
    "target_households": "--target-households",
}


def _load() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _on(doc: dict) -> dict:
    return doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` key as True


def _steps(doc: dict) -> list[dict]:
    return [step for job in doc["jobs"].values() for step in job["steps"]]


def test_dispatch_inputs_and_defaults():
    inputs = _on(_load())["workflow_dispatch"]["inputs"]
    assert set(ENTRYPOINT_FLAG) == set(inputs)
    assert all(inputs[k]["type"] == "boolean" for k in ("synthetic", "resume", "parallel"))
    assert (inputs["synthetic"]["default"], inputs["resume"]["default"], inputs["parallel"]["default"]) == (
        False, True, True)
    assert (inputs["num_workers"]["default"], inputs["n_clones"]["default"], inputs["chunk_size"]["default"],
            inputs["target_households"]["default"]) == (50, 430, 25000, 12000)
    assert all(inputs[k]["type"] == "string" for k in ("dataset", "db", "run_id"))


def test_every_input_reaches_an_entrypoint_flag():
    doc = _load()
    run_step = next(s for s in _steps(doc) if "modal run" in s.get("run", ""))
    env = run_step["env"]
    script = run_step["run"]
    for name, flag in ENTRYPOINT_FLAG.items():
        variables = [var for var, value in env.items() if value == "${{ inputs.%s }}" % name]
        assert len(variables) == 1, f"input {name} is not passed to the run step"
        var = variables[0]
        assert re.search(rf"\${{?{var}\b", script), f"{var} is never used"
        assert flag in script, f"{flag} missing from the run step"
        assert "${{ inputs." not in script  # inputs go through env, never pasted into the script


def test_entrypoint_takes_every_flag_and_maps_it_to_the_runner():
    params = inspect.signature(app_module.main.info.raw_f).parameters
    for name in ENTRYPOINT_FLAG:
        assert name in params, f"entrypoint has no --{name.replace('_', '-')}"
    args = app_module.runner_args(parallel=True, num_workers=3, n_clones=5, chunk_size=9, target_households=7)
    for name, flag in RUNNER_FLAG.items():
        assert flag in args, f"{name} does not reach {flag}"
    assert args[args.index("--num-matrix-workers") + 1] == "3" and args[args.index("--backend") + 1] == "modal"
    assert args[args.index("--n-clones") + 1] == "5" and args[args.index("--chunk-size") + 1] == "9"
    assert args[args.index("--target-households") + 1] == "7"


def test_workflow_deploys_then_runs_then_publishes_the_report():
    doc = _load()
    runs = [s.get("run", "") for s in _steps(doc)]
    deploy = next(i for i, r in enumerate(runs) if "modal deploy policyengine_us_data/modal_app/app.py" in r)
    run = next(i for i, r in enumerate(runs) if "modal run" in r)
    publish = next(i for i, r in enumerate(runs) if "GITHUB_STEP_SUMMARY" in r)
    assert deploy < run < publish
    assert "report.md" in runs[publish] and _steps(doc)[publish]["if"] == "always()"
    assert "--report-path report.md" in runs[run]


def test_the_wait_for_the_coordinator_is_bounded_inside_the_job_timeout():
    doc = _load()
    job = doc["jobs"]["pipeline"]
    script = next(s["run"] for s in _steps(doc) if "modal run" in s.get("run", ""))
    assert 'timeout --signal=INT "${WAIT_MINUTES}m" modal run --detach' in script
    assert int(job["env"]["WAIT_MINUTES"]) + 15 <= job["timeout-minutes"] <= 360  # GitHub-hosted jobs stop at 6 h
