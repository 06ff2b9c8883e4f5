"""The Modal worker body, run in-process, writes the same shards as the local dispatcher.

`build_matrix_chunk_worker.local(...)` reads the state and plans from a staging directory (as it
would from the volume) and runs the real kernel; its shards must equal, member by member, those
of `LocalChunkDispatcher` (serial and forked pool) and of a `ModalChunkDispatcher` whose function
handle runs the worker locally. The toy simulator makes one variant fast; the other uses the real
policyengine-us.
"""

from __future__ import annotations

import importlib
import zipfile
from pathlib import Path

import numpy as np
import pytest

try:
    importlib.import_module("policyengine_us_data.kernel.chunk_kernel")
    importlib.import_module("policyengine_us_data.kernel.build_state")
except ImportError as exc:  # pragma: no cover - until the kernel lands
    pytest.skip(f"the chunk kernel / build state is not importable yet ({exc})", allow_module_level=True)

from policyengine_us_data.kernel.build_state import write_build_state
from policyengine_us_data.dispatch import (
    LocalChunkDispatcher,
    ModalChunkDispatcher,
    volume_plans,
    write_plans,
)
from policyengine_us_data.shards.chunk_plan import ChunkPlan, partition_columns
from policyengine_us_data.datasets.geography import assign_geography
from policyengine_us_data.targets.targets import load_targets
from policyengine_us_data.datasets.synthetic import generate_synthetic
from tests.support.modal_stand_ins import LocalWorkerHandle
from tests.support.target_db import every_rule_targets, make_target_db

pytestmark = pytest.mark.filterwarnings("ignore:The .* function is executing locally")
TOY = "tests.support.toy_simulator:ToySimulator"
RUN = "it-run"
SIGNATURE = "integration-lineage"


def _state(root: Path, simulator: str, n_records: int, n_clones: int) -> Path:
    data = generate_synthetic(n_records, seed=11)
    geography = assign_geography(n_records, n_clones, seed=5)
    states = sorted({int(s) for s in geography.state_fips[:4]})
    districts = sorted({int(d) for d in geography.cd_geoid[:3]})
    db = make_target_db(root / "targets.db", every_rule_targets(states, districts))
    state_dir = root / "staging" / RUN / "state"
    write_build_state(state_dir, data=data, geography=geography, targets=load_targets(db, 2024), year=2024,
                      rerandomize_takeup=True, simulator=simulator)
    return state_dir


def _plans(directory: Path, n_columns: int, chunk_size: int) -> list[ChunkPlan]:
    return [ChunkPlan(cid, start, end, str(directory / f"chunk_{cid:06d}.npz"), SIGNATURE)
            for cid, start, end in partition_columns(n_columns, chunk_size)]


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _assert_same_shards(a: list[ChunkPlan], b: list[ChunkPlan]) -> None:
    assert len(a) == len(b)
    for left, right in zip(a, b):
        assert _members(Path(left.shard_path)) == _members(Path(right.shard_path)), left.chunk_id


def _check(tmp_path: Path, simulator: str, n_records: int, n_clones: int, chunk_size: int, *,
           via_dispatcher: bool, worker_chunks: int | None = None, serial: bool = True) -> None:
    """The reference shards come from the serial dispatcher, or (serial=False) from the forked pool."""
    from policyengine_us_data.modal_app.app import build_matrix_chunk_worker

    state_dir = _state(tmp_path, simulator, n_records, n_clones)
    staging = tmp_path / "staging"
    n_columns = n_records * n_clones
    local = _plans(tmp_path / "local", n_columns, chunk_size)
    report = LocalChunkDispatcher(workers=1 if serial else 2).dispatch(local, str(state_dir))
    assert not report.failures, report.failures

    remote = volume_plans(local, staging, RUN)
    write_plans(remote, staging, RUN)
    chosen = remote[-(worker_chunks or len(remote)):]
    outcomes = build_matrix_chunk_worker.local(RUN, [p.chunk_id for p in chosen], staging_root=str(staging))
    assert all(o["ok"] for o in outcomes), outcomes
    _assert_same_shards(local[-len(chosen):], chosen)

    if serial:
        pooled = _plans(tmp_path / "pool", n_columns, chunk_size)
        pool_report = LocalChunkDispatcher(workers=2).dispatch(pooled, str(state_dir))
        assert not pool_report.failures, pool_report.failures
        _assert_same_shards(local, pooled)

    if via_dispatcher:
        modal_root = tmp_path / "modal-staging"
        dispatcher = ModalChunkDispatcher(num_workers=2, run_id=RUN, volume_root=str(modal_root),
                                          function=LocalWorkerHandle(modal_root))
        modal_report = dispatcher.dispatch(local, str(state_dir))
        assert not modal_report.failures and len(modal_report.results) == len(local)
        _assert_same_shards(local, dispatcher.plans_on_volume)

        from policyengine_us_data.shards.csr_stream import assemble_csr

        n_rows = int(np.load(local[0].shard_path)["row_counts"].shape[0])
        a = assemble_csr([p.shard_path for p in local], n_rows, n_columns)
        b = assemble_csr([p.shard_path for p in dispatcher.plans_on_volume], n_rows, n_columns)
        assert a.nnz > 0 and (a != b).nnz == 0


def test_worker_local_matches_local_dispatch_toy(tmp_path):
    _check(tmp_path, TOY, n_records=30, n_clones=3, chunk_size=20, via_dispatcher=True)


@pytest.mark.integration
@pytest.mark.timeout(2400)
def test_worker_local_matches_local_dispatch_policyengine(tmp_path, pe_system):
    """Real policyengine-us: a warmed forked pool (2 chunks) and the worker body (1 chunk) write the same shard.
    (The serial dispatcher's real shards are checked against a direct simulation in test_chunked_matrix_real.)"""
    _check(tmp_path, "policyengine", n_records=8, n_clones=2, chunk_size=8, via_dispatcher=False, worker_chunks=1,
           serial=False)
