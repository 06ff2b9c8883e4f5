"""The unified_calibration CLI's flag logic, with a fake job in place of the real build."""

from __future__ import annotations


import types
from pathlib import Path

import pytest

from policyengine_us_data.calibration import unified_calibration as uc
from policyengine_us_data.dispatch import LocalChunkDispatcher, ModalChunkDispatcher


class FakeBuilder:
    def __init__(self, work_dir):
        self.work_dir = work_dir
        self.calls = []

    def build_matrix(self, geography, **kwargs):
        self.calls.append(("build_matrix", kwargs))
        return None, FakeMatrix(), []

    def build_matrix_chunked(self, geography, **kwargs):
        self.calls.append(("build_matrix_chunked", kwargs))
        return None, FakeMatrix(), []


class FakeMatrix:
    shape = (2, 3)
    nnz = 1


@pytest.fixture()
def fake_job(monkeypatch, tmp_path):
    """The CLI with a fake builder and output writer: its flag logic, no build."""
    builder = FakeBuilder(tmp_path / "work")
    builder.state_dir, builder.chunk_run = tmp_path / "state", None
    written = []
    monkeypatch.setattr(uc, "make_builder", lambda args, output_dir: (builder, object()))
    monkeypatch.setattr(uc, "write_outputs", lambda *a, **k: written.append(k))
    monkeypatch.chdir(tmp_path)
    return types.SimpleNamespace(builder=builder, written=written)


def run(argv):
    return uc.run(uc.build_parser().parse_args(argv))


def test_parallel_without_chunked_matrix_is_a_silent_no_op(fake_job, capsys):
    assert run(["--parallel"]) == 0
    with_flag = (fake_job.builder.calls[:], capsys.readouterr())
    fake_job.builder.calls.clear()
    assert run([]) == 0
    without = (fake_job.builder.calls[:], capsys.readouterr())
    assert with_flag[0] == without[0] and with_flag[0][0][0] == "build_matrix"
    assert with_flag[1].out == without[1].out and with_flag[1].err == without[1].err


def test_dispatcher_choice():
    parse = uc.build_parser().parse_args
    assert isinstance(uc.choose_dispatcher(parse(["--parallel"])), LocalChunkDispatcher)
    assert isinstance(uc.choose_dispatcher(parse(["--chunked-matrix", "--workers", "2"])), LocalChunkDispatcher)
    args = parse(["--chunked-matrix", "--parallel", "--run-id", "abc", "--num-matrix-workers", "7"])
    dispatcher = uc.choose_dispatcher(args)
    assert isinstance(dispatcher, ModalChunkDispatcher) and dispatcher.num_workers == 7
    assert str(dispatcher.shard_dir(Path("local"))).endswith("abc/matrix_chunks")  # the volume's, not the caller's


def test_chunked_build_passes_upstream_parameters(fake_job):
    assert run(["--chunked-matrix", "--chunk-size", "123", "--resume-chunks", "--chunk-dir", "c"]) == 0
    name, kwargs = fake_job.builder.calls[0]
    assert name == "build_matrix_chunked"
    assert kwargs["chunk_size"] == 123 and kwargs["resume_chunks"] is True and kwargs["chunk_dir"] == "c"
    assert kwargs["chunk_plan"] == "state"  # the default


def test_chunk_plan_flag_reaches_the_builder(fake_job, capsys):
    assert run(["--chunked-matrix", "--chunk-plan", "contiguous"]) == 0
    assert fake_job.builder.calls[0][1]["chunk_plan"] == "contiguous"
    with pytest.raises(SystemExit):
        uc.build_parser().parse_args(["--chunk-plan", "by-county"])
    assert "invalid choice: 'by-county'" in capsys.readouterr().err


def test_bad_input_exits_2(capsys):
    assert uc.main(["--plan"]) == 2
    assert "--plan needs --measured FILE" in capsys.readouterr().err
