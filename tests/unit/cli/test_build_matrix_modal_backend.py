"""`bin/build-matrix --backend modal` through the runner, with Modal's function handle and volume
replaced by in-process stand-ins that run the real worker body (`build_matrix_chunk_worker.local`)."""

from __future__ import annotations

import json

import numpy as np
import scipy.sparse as sp

from commands.cli import main as cli_main
from commands.dispatch_chunks import DispatchChunks
from policyengine_us_data.dispatch import ModalChunkDispatcher
from tests.support.modal_stand_ins import LocalWorkerHandle, RecordingVolume
from tests.support.target_db import every_rule_targets, make_target_db

TOY = ["--simulator", "tests.support.toy_simulator:ToySimulator", "--households", "30", "--n-clones", "2",
       "--chunk-size", "15", "--workers", "1"]


def test_modal_backend_gives_the_local_matrix_with_shards_on_the_volume(tmp_path, monkeypatch):
    db = make_target_db(tmp_path / "t.db", every_rule_targets([6, 36], [601]))
    staging, handle = tmp_path / "staging", LocalWorkerHandle(tmp_path / "staging")
    local_dispatcher = DispatchChunks.make_dispatcher

    run_ids = []

    def fake_dispatcher(args, run_id=None):
        if args.backend != "modal":
            return local_dispatcher(args)
        run_ids.append(args.run_id or run_id)
        return ModalChunkDispatcher(num_workers=2, run_id=args.run_id or run_id, volume_root=str(staging),
                                    function=handle, volume=RecordingVolume())

    monkeypatch.setattr(DispatchChunks, "make_dispatcher", staticmethod(fake_dispatcher))
    monkeypatch.setattr("commands.dispatch_chunks.lookup_worker", lambda: None)
    staging.mkdir()
    monkeypatch.setenv("PE_STAGING_ROOT", str(staging))  # the mounted volume
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
    # rerun without --run-id: the run directory remembers r1, so nothing is recomputed on the volume
    assert cli_main(["--run-dir", str(remote), "--to", "assemble", "--db", str(db), *TOY, "--backend", "modal",
                     "--chunk-size", "15", "--force"]) == 0
    rerun = json.loads((remote / "chunks" / "dispatch.json").read_text())["chunks"]
    half = -(-rerun // 2)
    assert run_ids == ["r1", "r1"] and handle.batches == [list(range(half)), list(range(half, rerun))]


def test_modal_backend_without_a_mounted_volume_says_how_to_start_the_coordinator(tmp_path, monkeypatch, capsys):
    db = make_target_db(tmp_path / "t.db", every_rule_targets([6], [601]))
    monkeypatch.setattr("commands.dispatch_chunks.lookup_worker", lambda: None)  # credentials and a deployed app
    monkeypatch.setenv("PE_STAGING_ROOT", str(tmp_path / "no-volume-here"))
    code = cli_main(["--run-dir", str(tmp_path / "run"), "--to", "assemble", "--db", str(db), *TOY,
                     "--backend", "modal"])
    assert code == 2
    err = capsys.readouterr().err
    assert "no staging volume" in err and "modal run policyengine_us_data/modal_app/app.py" in err
    assert not (tmp_path / "run" / "dataset").exists()  # validated before any step ran
