"""Where each step's files live inside the run directory (one place, so steps agree)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policyengine_us_data.utils.atomic import atomic_write_json


@dataclass(frozen=True)
class RunLayout:
    """Paths of a matrix build's run directory."""

    run_dir: Path

    @property
    def dataset_dir(self) -> Path:
        return self.run_dir / "dataset"

    @property
    def dataset(self) -> Path:
        return self.dataset_dir / "dataset.h5"

    @property
    def geography(self) -> Path:
        return self.dataset_dir / "geography.npz"

    @property
    def dataset_summary(self) -> Path:
        return self.dataset_dir / "summary.json"

    @property
    def constraints_dir(self) -> Path:
        return self.run_dir / "constraints"

    @property
    def constraints_summary(self) -> Path:
        return self.constraints_dir / "summary.json"

    @property
    def state_dir(self) -> Path:
        """The shared build state the `constraints` step writes and `dispatch` and every worker read."""
        return self.run_dir / "state"

    @property
    def chunk_dir(self) -> Path:
        return self.run_dir / "chunks"

    @property
    def dispatch_summary(self) -> Path:
        return self.chunk_dir / "dispatch.json"

    @property
    def verify_dir(self) -> Path:
        return self.run_dir / "verify"

    @property
    def matrix_dir(self) -> Path:
        return self.run_dir / "matrix"


def read_json(path: Path) -> dict[str, Any]:
    """A step's own earlier JSON output (written atomically by us)."""
    return json.loads(path.read_text())


def write_json(path: Path, obj: Any) -> None:
    atomic_write_json(path, obj)
