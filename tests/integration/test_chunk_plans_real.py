"""The state-major and contiguous chunk plans give the same matrix, array for array (data, indices, indptr), with
the real policyengine-us on the default data: the embedded synthetic households (40 x 2 clones) and the embedded
target database (national, state and district rows, two reform rows). Across two chunk sizes, 1 and 2 workers,
and after shards are lost and the build resumes. (The SIGKILL-and-resume of a real build, under the default state
plan, is `test_reliability_real.py`.)
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from policyengine_us_data.kernel.build_state import write_build_state
from policyengine_us_data.dispatch import LocalChunkDispatcher
from policyengine_us_data.dispatch.chunked_matrix_assembler import ChunkedMatrixAssembler
from policyengine_us_data.pipeline.default_targets import default_targets_path
from policyengine_us_data.datasets.geography import assign_geography
from policyengine_us_data.shards.lineage import ChunkManifest
from policyengine_us_data.targets.targets import load_targets
from policyengine_us_data.datasets.synthetic import generate_synthetic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
N_RECORDS, N_CLONES, SEED = 40, 2, 4


def assert_same(a, b) -> None:
    assert a.shape == b.shape
    for name in ("data", "indices", "indptr"):
        got, want = getattr(a, name), getattr(b, name)
        assert got.dtype == want.dtype, name
        np.testing.assert_array_equal(got, want, err_msg=name)


@pytest.fixture(scope="module")
def default_state(tmp_path_factory, pe_simulator):
    root = tmp_path_factory.mktemp("plans")
    table = load_targets(default_targets_path(), 2024, known_variables=pe_simulator.known_variables(),
                         uprating=pe_simulator.uprating())
    write_build_state(root / "state", data=generate_synthetic(N_RECORDS, seed=SEED),
                      geography=assign_geography(N_RECORDS, N_CLONES, seed=SEED), targets=table, year=2024,
                      rerandomize_takeup=True)
    return root / "state"


def build(state_dir, chunk_dir, plan: str, chunk_size: int, workers: int = 1):
    assembler = ChunkedMatrixAssembler(state_dir, chunk_dir, chunk_size=chunk_size, chunk_plan=plan, progress=False,
                                       dispatcher=LocalChunkDispatcher(workers=workers))
    return assembler, assembler.build()


@pytest.fixture(scope="module")
def contiguous(default_state, tmp_path_factory):
    _, matrix = build(default_state, tmp_path_factory.mktemp("contiguous"), "contiguous", 40)
    assert matrix.nnz > 0 and matrix.shape[1] == N_RECORDS * N_CLONES
    return matrix


@pytest.fixture(scope="module")
def state_25_two_workers(default_state, tmp_path_factory):
    chunk_dir = tmp_path_factory.mktemp("state25")
    assembler, matrix = build(default_state, chunk_dir, "state", 25, workers=2)
    return assembler, matrix, chunk_dir


def _states_per_chunk(assembler) -> list[int]:
    return [len(np.unique(assembler.state_fips[assembler.columns(p)])) for p in assembler.plans()]


def test_state_plan_gives_the_contiguous_matrix_at_chunk_size_40_on_one_worker(default_state, contiguous, tmp_path):
    assembler, matrix = build(default_state, tmp_path / "chunks", "state", 40)
    contiguous_states = len(np.unique(assembler.state_fips[:40]))
    assert min(_states_per_chunk(assembler)) < contiguous_states  # the chunks really are grouped by state
    assert_same(matrix, contiguous)


def test_state_plan_gives_the_contiguous_matrix_at_chunk_size_25_on_two_workers(state_25_two_workers, contiguous):
    assembler, matrix, _ = state_25_two_workers
    assert len(assembler.plans()) >= 4 and assembler.report.results
    assert len({r.worker for r in assembler.report.results}) == 2  # both workers ran chunks
    assert_same(matrix, contiguous)


def test_state_plan_resumes_lost_and_damaged_shards_to_the_same_matrix(default_state, state_25_two_workers,
                                                                      contiguous, tmp_path):
    _, _, source = state_25_two_workers
    chunk_dir = tmp_path / "chunks"
    shutil.copytree(source, chunk_dir)
    (chunk_dir / "chunk_000001.npz").unlink()
    before = ChunkManifest.load(chunk_dir / "chunk_manifest.json").chunks
    assembler, matrix = build(default_state, chunk_dir, "state", 25)
    after = ChunkManifest.load(chunk_dir / "chunk_manifest.json").chunks
    assert sorted(cid for cid in after if after[cid] != before[cid]) == [1]
    assert_same(matrix, contiguous)
    assert assembler.prove_cover() == N_RECORDS * N_CLONES
