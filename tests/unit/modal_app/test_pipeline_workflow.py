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
    "chunked_matrix": "--chunked-matrix",
    "parallel": "--parallel",
    "num_workers": "--num-workers",
    "n_clones": "--n-clones",
    "chunk_size": "--chunk-size",
    "run_id": "--run-id",
}
# entrypoint parameter -> unified_calibration flag
CALIBRATION_FLAG = {
    "chunked_matrix": "--chunked-matrix",
    "parallel": "--parallel",
    "num_workers": "--num-matrix-workers",
    "n_clones": "--n-clones",
    "chunk_size": "--chunk-size",
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
    assert inputs["chunked_matrix"]["type"] == inputs["parallel"]["type"] == "boolean"
    assert (inputs["num_workers"]["default"], inputs["n_clones"]["default"], inputs["chunk_size"]["default"]) == (
        50, 430, 25000)
    assert all(inputs[k]["type"] == "number" for k in ("num_workers", "n_clones", "chunk_size"))


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


def test_entrypoint_takes_every_flag_and_maps_it_to_the_calibration_cli():
    params = inspect.signature(app_module.main.info.raw_f).parameters
    for name in ENTRYPOINT_FLAG:
        assert name in params, f"entrypoint has no --{name.replace('_', '-')}"
    args = app_module.pipeline_cli_args(chunked_matrix=True, parallel=True, num_workers=3, n_clones=5, chunk_size=9)
    for name, flag in CALIBRATION_FLAG.items():
        assert flag in args, f"{name} does not reach {flag}"
    assert args[args.index("--num-matrix-workers") + 1] == "3"
    assert args[args.index("--n-clones") + 1] == "5" and args[args.index("--chunk-size") + 1] == "9"
    assert "--run-id" in app_module.coordinator_argv("r", args)


def test_workflow_deploys_then_runs_then_publishes_the_report():
    doc = _load()
    runs = [s.get("run", "") for s in _steps(doc)]
    deploy = next(i for i, r in enumerate(runs) if "modal deploy policyengine_us_data/modal_app/app.py" in r)
    run = next(i for i, r in enumerate(runs) if "modal run" in r)
    publish = next(i for i, r in enumerate(runs) if "GITHUB_STEP_SUMMARY" in r)
    assert deploy < run < publish
    assert "report.md" in runs[publish] and _steps(doc)[publish]["if"] == "always()"
    assert "--report-path report.md" in runs[run]
