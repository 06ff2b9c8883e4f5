"""What a step and a session see of their runner: a leaf module, so `command` and `session` name the
runner's type without importing `runner.runner` (which imports both of them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class RunnerView(Protocol):
    """The parts of `CommandRunner` that a `BaseCommand` and a `Session` use."""

    run_dir: Path

    @property
    def steps(self) -> list[Any]:
        """The registered steps in order."""

    def log_path(self, label: str) -> Path:
        """Where a step's log goes."""

    def step_seconds(self) -> dict[str, float]:
        """Each step's duration in its last successful attempt."""

    def _print(self, text: str) -> None:
        """Write a line to the runner's output stream."""
