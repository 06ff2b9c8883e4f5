"""One runner per run directory; a lock left by a killed process frees itself."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import runner as runner_pkg
from runner.lock import RunDirLock, RunDirLocked

REPO = Path(runner_pkg.__file__).resolve().parent.parent
HOLDER = """
import sys, time
from runner.lock import RunDirLock
RunDirLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


@pytest.fixture
def holder(run_dir):
    """Another process holding the run directory's lock until it is killed."""
    (run_dir / ".runner").mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir / ".runner" / "lock")],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()


def test_second_runner_exits_3_naming_the_holder(toy, run_dir, holder, capsys):
    result = toy.run([])
    assert result.exit_code == 3
    assert f"pid {holder.pid}" in result.message and socket.gethostname() in result.message
    assert toy.toy.calls == []
    assert toy.main(["--to", "cache"]) == 3
    assert f"pid {holder.pid}" in capsys.readouterr().err


def test_reports_do_not_need_the_lock(toy, holder):
    assert toy.run(["--status"]).exit_code == 0


def test_lock_is_free_after_the_holder_is_killed(toy, holder):
    assert toy.run([]).exit_code == 3
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    assert toy.run([]).exit_code == 0


def test_lock_is_released_after_a_run_and_refused_in_process(run_dir):
    (run_dir / ".runner").mkdir(parents=True)
    path = run_dir / ".runner" / "lock"
    with RunDirLock(path):
        with pytest.raises(RunDirLocked, match=f"pid {os.getpid()}"):
            RunDirLock(path).acquire()
    with RunDirLock(path):
        pass
