"""Corruption: damaged shards are named, recomputed alone, and never taken for good ones; a checkpoint whose
files were edited in place is repaired from (dispatch) or refused (--reset-to), never restored from.

One toy build per module is the reference. Each shard-damage case works on a copy of its live `state/` and
`chunks/` through the domain API the `verify` and `dispatch` steps use (`verifier(layout).classify()`,
`ChunkedMatrixAssembler(...).dispatch()` with resume); the runner cases build their own small run directory.
"""

from __future__ import annotations

import argparse

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from commands.layout import RunLayout
from commands.dispatch_chunks import read_chunk_run
from policyengine_us_data.dispatch import LocalChunkDispatcher
from policyengine_us_data.dispatch.chunked_matrix_assembler import ChunkedMatrixAssembler
from policyengine_us_data.shards.shards import read_shard, read_shard_header, shard_path, write_shard
from policyengine_us_data.pipeline.chunks import chunk_assembler
from tests.reliability.conftest import (
    _stub_figure,
    main_in_process,
    manifest_chunks,
    read_matrix,
    toy_args,
    tree_state,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, toy_db):
    """One uninterrupted toy build (6 chunks of the default state plan): its run directory, matrix and records."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("policyengine_us_data.outputs.report_figure.render_figure", _stub_figure)
        assert main_in_process(toy_args(run_dir, toy_db)) == 0
    return run_dir, read_matrix(run_dir), manifest_chunks(run_dir)


def _flip_middle_byte(path: Path) -> None:
    """Flip every bit of the byte in the middle of the file, in place (same inode, same size)."""
    with open(path, "r+b") as handle:
        middle = os.fstat(handle.fileno()).st_size // 2
        handle.seek(middle)
        byte = handle.read(1)
        handle.seek(middle)
        handle.write(bytes([byte[0] ^ 0xFF]))


def truncate(chunks: Path) -> set[int]:
    path = shard_path(chunks, 1)
    os.truncate(path, path.stat().st_size // 2)
    return {1}


def bit_flip(chunks: Path) -> set[int]:
    _flip_middle_byte(shard_path(chunks, 2))
    return {2}


def delete(chunks: Path) -> set[int]:
    shard_path(chunks, 3).unlink()
    return {3}


def duplicate(chunks: Path) -> set[int]:
    shutil.copyfile(shard_path(chunks, 0), shard_path(chunks, 4))  # chunk 4's path now holds chunk 0
    return {4}


def swap(chunks: Path) -> set[int]:
    a, b, tmp = shard_path(chunks, 1), shard_path(chunks, 3), chunks / "swap.tmp"
    os.rename(a, tmp)
    os.rename(b, a)
    os.rename(tmp, b)
    return {1, 3}


def overlap_and_gap(chunks: Path) -> set[int]:
    """Chunk 1's shard, rewritten whole and well-formed, trades one of its columns for one of chunk 2's: its
    column set now overlaps chunk 2's and leaves a column uncovered."""
    one, two = read_shard(shard_path(chunks, 1)), read_shard_header(shard_path(chunks, 2))
    dropped, taken = int(one.header.columns[0]), int(two.columns[0])
    keep = one.cols != dropped
    h = one.header
    write_shard(h.path, one.rows[keep], one.cols[keep], one.vals[keep], chunk_id=h.chunk_id, col_start=h.col_start,
                col_end=h.col_end, n_rows=h.n_rows, n_cols=h.n_cols, lineage_signature=h.lineage_signature,
                columns=np.sort(np.r_[h.columns[1:], taken]))
    return {1}


def everything(chunks: Path) -> set[int]:
    """Several kinds at once: truncate 1, flip 2, delete 3, duplicate 0 over 4."""
    return truncate(chunks) | bit_flip(chunks) | delete(chunks) | duplicate(chunks)


DAMAGE = [truncate, bit_flip, delete, duplicate, swap, overlap_and_gap, everything]


def _copy_live(reference_dir: Path, dest: Path) -> RunLayout:
    """The live outputs dispatch and verify read (not the runner's checkpoints, which share inodes)."""
    for name in ("state", "chunks"):
        shutil.copytree(reference_dir / name, dest / name)
    return RunLayout(dest)


def verifier(layout: RunLayout) -> ChunkedMatrixAssembler:
    """What the verify step checks with: the dispatch step's chunks, deep (every byte hashed)."""
    run = read_chunk_run(layout)
    return chunk_assembler(layout.state_dir, run.chunk_dir, chunk_size=run.chunk_size, chunk_plan=run.chunk_plan,
                           progress=False)


def _matrix_arrays(csr) -> tuple:
    return csr.data, csr.indices, csr.indptr, csr.shape


@pytest.mark.parametrize("damage", DAMAGE, ids=[d.__name__ for d in DAMAGE])
def test_verify_names_the_damaged_chunks_and_dispatch_recomputes_only_those(damage, reference, tmp_path):
    ref_dir, ref_matrix, ref_records = reference
    layout = _copy_live(ref_dir, tmp_path)
    damaged = damage(layout.chunk_dir)

    plan = verifier(layout).classify()  # the verify step's check (deep: every byte hashed)
    assert set(plan.reasons) == damaged, plan.reasons
    every = set(ref_records)
    assert {c.chunk_id for c in plan.done} == every - damaged

    untouched = {cid: os.stat(shard_path(layout.chunk_dir, cid)) for cid in every - damaged}
    assembler = ChunkedMatrixAssembler(layout.state_dir, layout.chunk_dir, chunk_size=25,
                                       dispatcher=LocalChunkDispatcher(workers=1), resume=True, progress=False)
    recomputed = assembler.dispatch()
    assert {c.chunk_id for c in recomputed.todo} == damaged

    records = manifest_chunks(layout.run_dir)
    for cid in sorted(every):
        if cid in damaged:
            assert records[cid]["attempts"] == ref_records[cid]["attempts"] + 1, cid
            assert records[cid]["checksum"] == ref_records[cid]["checksum"], cid  # the same content again
        else:
            assert records[cid] == ref_records[cid], cid  # not computed again
            st = os.stat(shard_path(layout.chunk_dir, cid))
            assert (st.st_ino, st.st_mtime_ns) == (untouched[cid].st_ino, untouched[cid].st_mtime_ns)

    assert verifier(layout).classify().reasons == {}
    data, indices, indptr, shape = _matrix_arrays(assembler.assemble())
    assert shape == ref_matrix.shape
    for got, want in ((data, ref_matrix.data), (indices, ref_matrix.indices), (indptr, ref_matrix.indptr)):
        assert np.array_equal(got, want)


def test_the_verify_step_names_every_damaged_chunk(reference, tmp_path, toy_db, fast_report, capsys):
    """Through the runner: damage the runner's stat check cannot see (bytes flipped in place, size and mtime
    kept), verify the live directory as it is (--allow-dirty): exit 1, one message naming each damaged chunk."""
    run_dir = tmp_path / "run"
    assert main_in_process(toy_args(run_dir, toy_db)) == 0
    chunks = run_dir / "chunks"
    for cid in (1, 3, 4):
        path = shard_path(chunks, cid)
        st = path.stat()
        with open(path, "r+b") as handle:
            handle.seek(st.st_size // 2)
            handle.write(b"\xff" * 16)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    capsys.readouterr()
    code = main_in_process(["--run-dir", str(run_dir), "--to", "verify", "--force", "--allow-dirty", "--deep"])
    err = capsys.readouterr().err
    assert code == 1
    assert "3 damaged chunk(s)" in err and all(f"chunk {cid}:" in err for cid in (1, 3, 4)), err
    assert "chunk 0:" not in err and "chunk 2:" not in err
    assert "Traceback" not in err


def _verify_step(run_dir: Path) -> str:
    """Run the verify step itself on `run_dir` (the runner would see the rewritten shard first, mark dispatch
    stale and recompute it: that is its job; here the step's own proof is under test); return its error."""
    from commands.verify_shards import VerifyShards
    from runner import BuildState, CommandError

    step = VerifyShards(argparse.Namespace(deep=False), runner=None)
    with pytest.raises(CommandError) as failed:
        step.run(BuildState(run_dir, ("dataset", "constraints", "dispatch"), "verify", False, "test"))
    return str(failed.value)


def test_the_verify_step_names_a_shard_whose_column_set_overlaps_another_and_misses_one(reference, tmp_path, toy_db,
                                                                                        fast_report):
    run_dir = tmp_path / "run"
    assert main_in_process(toy_args(run_dir, toy_db)) == 0
    overlap_and_gap(run_dir / "chunks")
    err = _verify_step(run_dir)
    assert "1 damaged chunk(s): chunk 1: " in err and "wrong columns for chunk 1: 1 not in its plan" in err, err
    assert "1 of its planned columns missing" in err


def test_the_verify_steps_cover_proof_names_an_overlap_even_when_each_shard_matches_its_plan(
        reference, tmp_path, toy_db, fast_report, monkeypatch):
    """With the per-chunk column check switched off (as if the plan itself were wrong), the exact-cover proof over
    the shards' own column sets still catches chunk 1 holding a column of chunk 2."""
    run_dir = tmp_path / "run"
    assert main_in_process(toy_args(run_dir, toy_db)) == 0
    overlap_and_gap(run_dir / "chunks")
    monkeypatch.setattr(ChunkedMatrixAssembler, "columns", lambda self, chunk: None)
    err = _verify_step(run_dir)
    assert "1 damaged chunk(s): chunk 2: " in err and "1 of its columns" in err and "are also in chunk 1" in err, err
    report = json.loads((run_dir / "verify" / "verify.json").read_text())
    assert report["columns_covered_once"] == 0 and [d["chunk_id"] for d in report["damaged"]] == [2]


def test_a_shard_edited_in_place_inside_the_checkpoint_is_repaired_alone(tmp_path, toy_db, fast_report, capsys):
    run_dir = tmp_path / "run"
    args = toy_args(run_dir, toy_db)
    assert main_in_process(args) == 0
    expected, before = read_matrix(run_dir), manifest_chunks(run_dir)
    _flip_middle_byte(shard_path(run_dir / "chunks", 2))  # the live file IS the checkpointed inode
    capsys.readouterr()

    assert main_in_process(args) == 0
    out = capsys.readouterr().out
    assert "repairing dispatch" in out
    assert "dispatch: running (outputs modified since the checkpoint: chunks/chunk_000002.npz" in out
    after = manifest_chunks(run_dir)
    assert after[2]["attempts"] == before[2]["attempts"] + 1
    assert {cid: r for cid, r in after.items() if cid != 2} == {cid: r for cid, r in before.items() if cid != 2}
    assert read_matrix(run_dir) == expected


def test_reset_to_a_checkpoint_damaged_in_place_is_refused(tmp_path, toy_db, fast_report, capsys):
    run_dir = tmp_path / "run"
    assert main_in_process(toy_args(run_dir, toy_db)) == 0
    _flip_middle_byte(shard_path(run_dir / "chunks", 0))
    checkpoints = sorted(p.name for p in (run_dir / ".runner" / "checkpoints").iterdir())
    before = {k: v for k, v in tree_state(run_dir).items() if not k.startswith(".runner")}
    capsys.readouterr()

    code = main_in_process(["--run-dir", str(run_dir), "--reset-to", "dispatch"])
    err = capsys.readouterr().err
    assert code == 2
    assert "checkpoint 'dispatch' is damaged" in err and "chunks/chunk_000000.npz" in err
    assert "Refusing to restore" in err and "--to dispatch" in err  # the problem and the fix
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    after = {k: v for k, v in tree_state(run_dir).items() if not k.startswith(".runner")}
    assert after == before, "a refused reset must not restore anything"
    assert (run_dir / "matrix" / "X.npz").exists()  # the reset would have removed assemble's outputs
    assert sorted(p.name for p in (run_dir / ".runner" / "checkpoints").iterdir()) == checkpoints
