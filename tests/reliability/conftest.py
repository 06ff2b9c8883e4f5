"""Shared helpers for the reliability suite: toy builds (in-process and in a subprocess), matrix comparison,
temp-file and tree snapshots, and crash-point counting.

The toy simulator (tests/support/toy_simulator.py) stands in for policyengine-us so a whole build takes a
second or two; tests/integration/test_reliability_real.py repeats one case of each kind with the real one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pytest

CRASH_VARS = ("MATRIX_CRASH_AT", "RUNNER_CRASH_AT")  # the project's crash points, and the runner's own
for _var in CRASH_VARS:
    os.environ.pop(_var, None)  # never kill the test process itself

from tests.support.target_db import every_rule_targets, make_target_db  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TOY_SIM = "tests.support.toy_simulator:ToySimulator"
SLOW_SIM = "tests.support.slow_simulator:SlowToySimulator"
TOY_FLAGS = ("--households", "60", "--n-clones", "2", "--chunk-size", "25")
CRASH_POINTS = ("kernel-simulated", "atomic-before-rename", "checkpoint-midway", "assembly-midway",
                "journal-before-rename")
# Every module that calls a crash point, as imported there (for counting how often a build reaches each).
CRASH_CALLERS = ("policyengine_us_data.kernel.chunk_kernel", "policyengine_us_data.utils.atomic",
                 "policyengine_us_data.shards.csr_stream", "runner.checkpoints", "runner.fsutil")


def toy_args(run_dir: Path, db: Path, *extra: str, workers: int = 1, to: str = "assemble",
             simulator: str = TOY_SIM) -> list[str]:
    """Command-line arguments of a small toy build (chunks of at most 25 columns, 30 target rows)."""
    return ["--run-dir", str(run_dir), "--to", to, *TOY_FLAGS, "--workers", str(workers), "--db", str(db),
            "--simulator", simulator, *extra]


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CRASH_VARS}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), MPLBACKEND="Agg", **extra)
    return env


def run_cli(args: list[str], *, crash_at: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m commands.cli ARGS` in a subprocess; `crash_at` names a crash point of the project's or the
    runner's (their names differ), so both switches get it."""
    env = subprocess_env(**({var: crash_at for var in CRASH_VARS} if crash_at else {}))
    return subprocess.run([sys.executable, "-m", "commands.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def start_cli(args: list[str], **extra_env: str) -> subprocess.Popen:
    """Start `python -m commands.cli ARGS` in the background (stdout and stderr captured)."""
    return subprocess.Popen([sys.executable, "-m", "commands.cli", *args], cwd=REPO, env=subprocess_env(**extra_env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def main_in_process(args: list[str]) -> int:
    """`bin/build-matrix ARGS` in this process (imports are paid once for the whole suite)."""
    from commands.cli import main

    return main(list(args))


def _stub_figure(path, chunks, exact, errors) -> None:
    """A stand-in for the report figure (matplotlib costs seconds a build): still written atomically."""
    from policyengine_us_data.utils.atomic import atomic_write_bytes

    atomic_write_bytes(path, b"\x89PNG stub for the reliability suite\n")


@pytest.fixture
def fast_report(monkeypatch):
    """In-process builds skip drawing report.png (not under test here; X.npz and targets.csv are)."""
    monkeypatch.setattr("policyengine_us_data.outputs.report_figure.render_figure", _stub_figure)


@pytest.fixture(autouse=True)
def _quiet_fsync(monkeypatch):
    """In-process builds skip the runner's metadata fsync (durability across power loss is not under test;
    a SIGKILL never loses the page cache). Subprocesses keep it."""
    monkeypatch.setattr("runner.fsutil.FSYNC", False)


@pytest.fixture(scope="session")
def toy_db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("db") / "targets.db"
    make_target_db(path, every_rule_targets([6, 36, 48], [601, 3601]))
    return path


@dataclass(frozen=True)
class Matrix:
    """The assembled matrix as arrays (X.npz's zip timestamps are not compared) plus targets.csv's bytes."""

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    shape: tuple[int, ...]
    targets_csv: bytes

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Matrix) and self.shape == other.shape and self.targets_csv == other.targets_csv
                and all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in
                        zip((self.data, self.indices, self.indptr), (other.data, other.indices, other.indptr))))

    __hash__ = None  # type: ignore[assignment]


def read_matrix(run_dir: Path) -> Matrix:
    with np.load(Path(run_dir) / "matrix" / "X.npz", allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in ("data", "indices", "indptr", "shape")}
    return Matrix(arrays["data"], arrays["indices"], arrays["indptr"], tuple(int(v) for v in arrays["shape"]),
                  (Path(run_dir) / "matrix" / "targets.csv").read_bytes())


def manifest_chunks(run_dir: Path) -> dict[int, dict]:
    """chunk id -> its record in chunks/chunk_manifest.json ({} when there is no manifest yet)."""
    path = Path(run_dir) / "chunks" / "chunk_manifest.json"
    if not path.exists():
        return {}
    return {int(c["chunk_id"]): c for c in json.loads(path.read_text())["chunks"]}


TEMP_MARKS = (".tmp-", ".trash-", ".probe-")
TEMP_ENDS = (".tmp", ".restore")


def temp_files(run_dir: Path) -> list[str]:
    """Every temp file or folder anywhere under the run directory, `.runner/` and its checkpoints included:
    the domain's `.tmp-*`, the runner's `.<name>.<pid>.<n>.tmp`, restore temps, snapshot/trash folders."""
    found = []
    for path in Path(run_dir).rglob("*"):
        name = path.name
        if name.startswith(TEMP_MARKS) or name.endswith(TEMP_ENDS):
            found.append(path.relative_to(run_dir).as_posix())
    return sorted(found)


def tree_state(root: Path) -> dict[str, tuple]:
    """Every file, directory and symlink under ``root`` (itself included) with size and mtime: a run
    directory 'unchanged' means this is equal before and after."""
    root = Path(root)
    if not os.path.lexists(root):
        return {}
    out = {}
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        kind = "dir" if path.is_dir() and not path.is_symlink() else "file"
        out[path.relative_to(root).as_posix()] = (kind, st.st_size if kind == "file" else 0, st.st_mtime_ns)
    return out


def count_crash_points(monkeypatch) -> dict[str, int]:
    """Patch every caller's `crash_point` with a counter; returns the live counts by name."""
    import importlib

    counts: dict[str, int] = {}

    def counting(name: str) -> None:
        counts[name] = counts.get(name, 0) + 1

    for module in CRASH_CALLERS:
        monkeypatch.setattr(importlib.import_module(module), "crash_point", counting)
    return counts


def wait_for(condition, timeout: float, what: str, interval: float = 0.05):
    """Poll ``condition()`` until it returns something truthy (returned) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def no_tracebacks(*texts: Iterable[str]) -> None:
    for text in texts:
        assert "Traceback (most recent call last)" not in text, text
