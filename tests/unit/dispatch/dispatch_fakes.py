"""Fakes of the dispatch seam: a kernel, a Modal function handle and call (the volume: tests/support/modal_stand_ins.py).

The fake kernel writes a small shard atomically (like the real one) and keeps its attempt counts
in files, so the counts survive a fork and a test can make a chunk fail N times in any backend.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from policyengine_us_data.dispatch import run_worker_batch
from policyengine_us_data.shards.chunk_plan import ChunkPlan, ChunkResult
from policyengine_us_data.utils.atomic import TEMP_PREFIX, atomic_path, atomic_write_bytes


class FakeKernel:
    """Writes `{chunk_id, cols}` as the shard; fails chosen chunks a chosen number of times.

    `fail`: chunk id -> failures before success (-1: always). `interrupt`: chunk ids that leave a temp
    file and raise KeyboardInterrupt. `die`: chunk ids whose first attempt kills the process.
    `hold`: seconds spent mid-write (temp file on disk) before the shard is moved into place.
    """

    def __init__(
        self,
        counter_dir: Path,
        fail: dict[int, int] | None = None,
        interrupt: set[int] | None = None,
        die: set[int] | None = None,
        delay: float = 0.0,
        hold: float = 0.0,
    ) -> None:
        self.counter_dir = Path(counter_dir)
        self.counter_dir.mkdir(parents=True, exist_ok=True)
        self.fail = fail or {}
        self.interrupt = interrupt or set()
        self.die = die or set()
        self.delay = delay
        self.hold = hold

    def attempts(self, chunk_id: int) -> int:
        return len(list(self.counter_dir.glob(f"{chunk_id}-*")))

    def _count(self, chunk_id: int) -> int:
        n = self.attempts(chunk_id) + 1
        (self.counter_dir / f"{chunk_id}-{n}-{os.getpid()}").touch()
        return n

    def __call__(self, plan: ChunkPlan, state_dir: str) -> ChunkResult:
        attempt = self._count(plan.chunk_id)
        if self.delay:
            time.sleep(self.delay)
        target = Path(plan.shard_path)
        if plan.chunk_id in self.interrupt:
            target.parent.mkdir(parents=True, exist_ok=True)
            (target.parent / f"{TEMP_PREFIX}{target.name}.partial").write_bytes(b"half a shard")
            raise KeyboardInterrupt
        if plan.chunk_id in self.die and attempt == 1:
            os._exit(3)
        budget = self.fail.get(plan.chunk_id, 0)
        if budget < 0 or attempt <= budget:
            raise RuntimeError(f"boom in chunk {plan.chunk_id} (attempt {attempt})")
        payload = {"chunk_id": plan.chunk_id, "cols": [plan.col_start, plan.col_end], "state": str(state_dir)}
        data = json.dumps(payload, sort_keys=True).encode()
        if self.hold:
            with atomic_path(target, fsync=False) as tmp:
                tmp.write_bytes(data[:5])
                time.sleep(self.hold)
                tmp.write_bytes(data)
        else:
            atomic_write_bytes(target, data, fsync=False)
        return ChunkResult(plan.chunk_id, plan.col_start, plan.col_end, nnz=plan.n_columns, households=1,
                           persons=2, seconds=self.delay, peak_rss_mb=1.0)


class FakeCall:
    def __init__(self, run: Callable[[], Any]) -> None:
        self._run = run
        self.cancelled = False

    def get(self, timeout: float | None = None) -> Any:
        return self._run()

    def cancel(self, terminate_containers: bool = False) -> None:
        self.cancelled = True


class FakeFunction:
    """Stands in for `modal.Function.from_name(...)`: `.spawn()` records, `.get()` runs the worker body.

    `raise_on_get`: chunk ids whose batch call raises at `.get()` (the whole container failed).
    `drop`: chunk ids the worker "forgets" to write (reports success, no shard).
    """

    def __init__(self, root: Path, kernel: FakeKernel, raise_on_get: set[int] | None = None,
                 spawn_error: set[int] | None = None, drop: set[int] | None = None) -> None:
        self.root = Path(root)
        self.kernel = kernel
        self.raise_on_get = raise_on_get or set()
        self.spawn_error = spawn_error or set()
        self.drop = drop or set()
        self.spawns: list[dict[str, Any]] = []

    def spawn(self, **kwargs: Any) -> FakeCall:
        self.spawns.append(kwargs)
        ids = list(kwargs["chunk_ids"])
        if self.spawn_error & set(ids):
            raise ConnectionError("could not schedule the call")

        def run() -> list[dict[str, Any]]:
            if self.raise_on_get & set(ids):
                raise RuntimeError(f"container crashed running {ids}")
            outcomes = run_worker_batch(kwargs["run_id"], ids, root=self.root, kernel=self.kernel)
            for outcome in outcomes:
                if outcome["chunk_id"] in self.drop:
                    chunks = self.root / kwargs["run_id"] / "matrix_chunks"
                    for path in chunks.glob(f"chunk_{outcome['chunk_id']:06d}.npz"):
                        path.unlink()
            return outcomes

        return FakeCall(run)


def make_plans(directory: Path, n: int, width: int = 10, signature: str = "sig") -> list[ChunkPlan]:
    return [
        ChunkPlan(i, i * width, (i + 1) * width, str(Path(directory) / f"chunk_{i:06d}.npz"), signature)
        for i in range(n)
    ]
