"""LocalChunkDispatcher with a fake kernel: serial, forked pool, retries, worker deaths, Ctrl-C."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from dispatch_fakes import FakeKernel, make_plans

from policyengine_us_data.dispatch import LocalChunkDispatcher
from policyengine_us_data.errors import InputError
from policyengine_us_data.utils.atomic import TEMP_PREFIX


def _temp_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"{TEMP_PREFIX}*"))


def test_serial_runs_every_chunk_and_reports_as_they_arrive(tmp_path, state_dir, kernel):
    plans = make_plans(tmp_path / "chunks", 5)
    seen = []
    report = LocalChunkDispatcher(workers=1, kernel=kernel).dispatch(plans, str(state_dir), on_result=seen.append)
    assert [r.chunk_id for r in report.results] == [0, 1, 2, 3, 4]
    assert sorted(r.chunk_id for r in seen) == [0, 1, 2, 3, 4]
    assert not report.failures and report.ok
    assert all(Path(p.shard_path).exists() for p in plans)
    assert json.loads(Path(plans[2].shard_path).read_text())["state"] == str(state_dir)
    spans = [span for spans in report.worker_timings.values() for span in spans]
    assert sorted(s[0] for s in spans) == [0, 1, 2, 3, 4]
    assert all(end >= start for _, start, end in spans)
    assert report.wall_seconds > 0
    assert all(r.worker and r.finished >= r.started > 0 for r in report.results)


def test_serial_failure_does_not_stop_others_and_retries_are_bounded(tmp_path, state_dir):
    kernel = FakeKernel(tmp_path / "attempts", fail={1: -1, 3: 2})
    plans = make_plans(tmp_path / "chunks", 5)
    report = LocalChunkDispatcher(workers=1, max_retries=2, kernel=kernel).dispatch(plans, str(state_dir))
    assert [r.chunk_id for r in report.results] == [0, 2, 3, 4]
    assert [f.chunk_id for f in report.failures] == [1]
    failure = report.failures[0]
    assert failure.attempts == 3 and kernel.attempts(1) == 3
    assert "RuntimeError: boom in chunk 1" in failure.error
    assert "boom in chunk 1" in failure.traceback_excerpt and "Traceback" in failure.traceback_excerpt
    assert kernel.attempts(3) == 3  # failed twice, third attempt succeeded


def test_no_retries_means_one_attempt(tmp_path, state_dir):
    kernel = FakeKernel(tmp_path / "attempts", fail={0: 1})
    report = LocalChunkDispatcher(max_retries=0, kernel=kernel).dispatch(make_plans(tmp_path, 2), str(state_dir))
    assert [f.attempts for f in report.failures] == [1]
    assert kernel.attempts(0) == 1


def test_pool_matches_serial_and_uses_forked_workers(tmp_path, state_dir):
    serial_plans = make_plans(tmp_path / "serial", 8)
    pool_plans = make_plans(tmp_path / "pool", 8)
    LocalChunkDispatcher(workers=1, kernel=FakeKernel(tmp_path / "a1")).dispatch(serial_plans, str(state_dir))
    warmed: list[str] = []
    seen = []
    kernel = FakeKernel(tmp_path / "a2", delay=0.05)
    dispatcher = LocalChunkDispatcher(workers=2, kernel=kernel, warm_up=warmed.append)
    report = dispatcher.dispatch(pool_plans, str(state_dir), on_result=seen.append)
    assert warmed == [str(state_dir)]  # warmed once, in the parent, before forking
    assert [r.chunk_id for r in report.results] == list(range(8)) and len(seen) == 8
    for a, b in zip(serial_plans, pool_plans):
        assert json.loads(Path(a.shard_path).read_text())["cols"] == json.loads(
            Path(b.shard_path).read_text())["cols"]
    pids = {int(r.worker.rsplit(":", 1)[1]) for r in report.results}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert gc.get_freeze_count() == 0  # the parent's heap is unfrozen again afterwards
    assert not psutil.Process().children()


def test_pool_retries_across_processes(tmp_path, state_dir):
    kernel = FakeKernel(tmp_path / "attempts", fail={2: 1, 5: -1})
    report = LocalChunkDispatcher(workers=2, max_retries=1, kernel=kernel).dispatch(
        make_plans(tmp_path, 6), str(state_dir))
    assert [r.chunk_id for r in report.results] == [0, 1, 2, 3, 4]
    assert [(f.chunk_id, f.attempts) for f in report.failures] == [(5, 2)]
    assert kernel.attempts(2) == 2


def test_pool_survives_a_worker_dying(tmp_path, state_dir):
    kernel = FakeKernel(tmp_path / "attempts", die={1})
    report = LocalChunkDispatcher(workers=2, max_retries=2, kernel=kernel).dispatch(
        make_plans(tmp_path, 4), str(state_dir))
    assert [r.chunk_id for r in report.results] == [0, 1, 2, 3]
    assert not report.failures
    assert not psutil.Process().children()


class _SignalRecordingKernel(FakeKernel):
    """Writes, beside each shard, which SIGTERM action the worker running it had."""

    def __call__(self, plan, state_dir):
        handler = signal.getsignal(signal.SIGTERM)
        Path(plan.shard_path + ".sigterm").write_text("default" if handler == signal.SIG_DFL else repr(handler))
        return super().__call__(plan, state_dir)


def test_pool_workers_do_not_inherit_a_raising_sigterm_handler(tmp_path, state_dir):
    """A runner step turns SIGTERM into an exception; a forked worker must not, or every worker the pool
    terminates after a crash prints a traceback."""
    def raising(signum, frame):
        raise RuntimeError("the parent's handler ran in a worker")

    previous = signal.signal(signal.SIGTERM, raising)
    try:
        plans = make_plans(tmp_path, 4)
        LocalChunkDispatcher(workers=2, kernel=_SignalRecordingKernel(tmp_path / "a"), warm_up=False).dispatch(
            plans, str(state_dir))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert {Path(p.shard_path + ".sigterm").read_text() for p in plans} == {"default"}


def test_serial_ctrl_c_leaves_only_whole_shards(tmp_path, state_dir):
    kernel = FakeKernel(tmp_path / "attempts", interrupt={2})
    plans = make_plans(tmp_path / "chunks", 4)
    with pytest.raises(KeyboardInterrupt):
        LocalChunkDispatcher(workers=1, kernel=kernel).dispatch(plans, str(state_dir))
    assert _temp_files(tmp_path / "chunks") == []
    assert sorted(p.name for p in (tmp_path / "chunks").iterdir()) == ["chunk_000000.npz", "chunk_000001.npz"]


def test_pool_ctrl_c_stops_workers_and_leaves_no_temp_files(tmp_path, state_dir):
    kernel = FakeKernel(tmp_path / "attempts", interrupt={3}, delay=0.02)
    plans = make_plans(tmp_path / "chunks", 12)
    with pytest.raises(KeyboardInterrupt):
        LocalChunkDispatcher(workers=2, kernel=kernel).dispatch(plans, str(state_dir))
    assert _temp_files(tmp_path / "chunks") == []
    assert not psutil.Process().children()
    assert gc.get_freeze_count() == 0
    for path in (tmp_path / "chunks").iterdir():
        json.loads(path.read_text())  # every shard left is whole


def test_unrelated_temp_files_are_left_alone(tmp_path, state_dir):
    chunks = tmp_path / "chunks"
    chunks.mkdir()
    other = chunks / f"{TEMP_PREFIX}chunk_manifest.json.abc"
    other.write_text("{}")
    with pytest.raises(KeyboardInterrupt):
        LocalChunkDispatcher(kernel=FakeKernel(tmp_path / "a", interrupt={0})).dispatch(
            make_plans(chunks, 1), str(state_dir))
    assert other.exists()


def test_bad_arguments(tmp_path, state_dir, kernel):
    for workers in (0, -1, 1.5):
        with pytest.raises(InputError, match="--workers"):
            LocalChunkDispatcher(workers=workers)
    with pytest.raises(InputError):
        LocalChunkDispatcher(max_retries=-1)
    plans = make_plans(tmp_path, 2)
    with pytest.raises(InputError, match="planned twice"):
        LocalChunkDispatcher(kernel=kernel).dispatch([plans[0], plans[0]], str(state_dir))


def test_no_plans_is_an_empty_report(state_dir, kernel):
    report = LocalChunkDispatcher(workers=2, kernel=kernel).dispatch([], str(state_dir))
    assert report.results == [] and report.failures == [] and report.ok


CTRL_C_SCRIPT = """
import signal
import sys
from pathlib import Path
# A terminal's foreground job takes Ctrl-C; a test run started in the background (nohup, `cmd &` in a
# script) passes SIGINT down as ignored, which a dispatch rightly keeps ignoring. Start as the terminal would.
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.pthread_sigmask(signal.SIG_UNBLOCK, {{signal.SIGINT, signal.SIGTERM}})
sys.path.insert(0, {here!r})
from dispatch_fakes import FakeKernel, make_plans
from policyengine_us_data.dispatch import LocalChunkDispatcher
kernel = FakeKernel(Path({attempts!r}), hold=60)
try:
    LocalChunkDispatcher(workers=2, kernel=kernel).dispatch(make_plans(Path({chunks!r}), 6), {state!r})
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
"""


def test_real_ctrl_c_on_the_process_group_mid_write(tmp_path, state_dir):
    """SIGINT to the whole group, as a terminal sends it, while both workers hold temp files."""
    chunks, attempts = tmp_path / "chunks", tmp_path / "attempts"
    script = CTRL_C_SCRIPT.format(here=str(Path(__file__).parent), attempts=str(attempts), chunks=str(chunks),
                                  state=str(state_dir))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(_temp_files(chunks) if chunks.exists() else []) < 2:
            assert time.monotonic() < deadline and proc.poll() is None, "workers never started writing"
            time.sleep(0.05)
        worker_pids = {int(p.name.rsplit("-", 1)[1]) for p in attempts.iterdir()}
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130 and "interrupted" in out
    assert _temp_files(chunks) == []
    assert list(chunks.glob("chunk_*.npz")) == []
    assert not [pid for pid in worker_pids if psutil.pid_exists(pid)
                and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
