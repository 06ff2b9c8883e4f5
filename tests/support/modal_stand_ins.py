"""In-process stand-ins for Modal's function handle, call and volume, shared by the unit and integration tests.

`LocalWorkerHandle.spawn` runs the real worker body (`build_matrix_chunk_worker.local`) on a staging directory
and records each batch it was given; `RecordingVolume` records reload/commit in order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class ReadyCall:
    """A spawned call whose outcomes are already known."""

    def __init__(self, outcomes: Any) -> None:
        self.outcomes = outcomes

    def get(self, timeout: float | None = None) -> Any:
        return self.outcomes

    def cancel(self, terminate_containers: bool = False) -> None:
        pass


class LocalWorkerHandle:
    """Stands in for `modal.Function.from_name(...)` of the chunk worker: runs it here, on `root`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.batches: list[list[int]] = []

    def spawn(self, *, run_id: str, chunk_ids: list[int], code_identity: str | None = None) -> ReadyCall:
        from policyengine_us_data.modal_app.app import build_matrix_chunk_worker

        self.batches.append(list(chunk_ids))
        return ReadyCall(build_matrix_chunk_worker.local(run_id, chunk_ids, staging_root=str(self.root),
                                                         code_identity=code_identity))


class RecordingVolume:
    """Records reload/commit calls in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def reload(self) -> None:
        self.calls.append("reload")

    def commit(self) -> None:
        self.calls.append("commit")
