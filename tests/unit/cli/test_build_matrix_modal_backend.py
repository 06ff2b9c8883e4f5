"""`bin/build-matrix --backend modal` through the runner, with Modal's function handle and volume
replaced by in-process stand-ins that run the real worker body (`build_matrix_chunk_worker.local`)."""

from __future__ import annotations

import json

import numpy as np
import scipy.sparse as sp

from commands.cli import main as cli_main
from commands.dispatch_chunks import DispatchChunks
from policyengine_us_data.calibration.chunk_dispatch import ModalChunkDispatcher
from tests.support.modal_stand_ins import LocalWorkerHandle, RecordingVolume
from tests.support.target_db import every_rule_targets, make_target_db

TOY = ["--simulator", "tests.support.toy_simulator:ToySimulator", "--households", "30", "--n-clones", "2",
       "--chunk-size", "15", "--workers", "1"]


def test_modal_backend_gives_the_local_matrix_with_shards_on_the_volume(tmp_path, monkeypatch):
    db = make_target_db(tmp_path / "t.db", every_rule_targets([6, 36], [601]))
    staging, handle = tmp_path / "staging", LocalWorkerHandle(tmp_path / "staging")
    local_dispatcher = DispatchChunks.make_dispatcher

    def fake_dispatcher(args):
        if args.backend != "modal":
            return local_dispatcher(args)
        return ModalChunkDispatcher(num_workers=2, run_id=args.run_id, volume_root=str(staging),
                                    function=handle, volume=RecordingVolume())

    monkeypatch.setattr(DispatchChunks, "make_dispatcher", staticmethod(fake_dispatcher))
    monkeypatch.setattr("commands.dispatch_chunks.lookup_worker", lambda: None)
    local, remote = tmp_path / "local", tmp_path / "remote"
    assert cli_main(["--run-dir", str(local), "--to", "assemble", "--db", str(db), *TOY]) == 0
    assert cli_main(["--run-dir", str(remote), "--to", "assemble", "--db", str(db), *TOY,
                     "--backend", "modal", "--run-id", "r1"]) == 0
    a, b = sp.load_npz(local / "matrix" / "X.npz"), sp.load_npz(remote / "matrix" / "X.npz")
    for name in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    summary = json.loads((remote / "chunks" / "dispatch.json").read_text())
    n = summary["chunks"]
    assert summary["chunk_plan"] == "state" and n >= 4  # the default plan; the worker derives each chunk's columns
    assert sorted(p.name for p in (staging / "r1" / "matrix_chunks").glob("chunk_*.npz")) == [
        f"chunk_{i:06d}.npz" for i in range(n)]
    assert handle.batches == [list(range(0, -(-n // 2))), list(range(-(-n // 2), n))]
    assert not list((remote / "chunks").glob("chunk_*.npz"))  # the shards stay on the volume
