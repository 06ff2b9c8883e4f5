"""Concurrency: one runner per run directory. A second build is refused at once (exit 3) naming the holder's pid
and host, and the first finishes unharmed; after the holder is SIGKILLed (its forked workers with it), a new
build starts without manual cleanup and completes.

Build A uses SlowToySimulator (tests/support/slow_simulator.py: 0.5-1 s per chunk), so it is still running when
B arrives; every wait polls a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.reliability.conftest import (
    SLOW_SIM,
    _stub_figure,
    main_in_process,
    manifest_chunks,
    read_matrix,
    run_cli,
    start_cli,
    temp_files,
    toy_args,
    wait_for,
)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, toy_db):
    """The matrix the slow build must produce (same simulator name, no sleeping)."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("policyengine_us_data.outputs.report_figure.render_figure", _stub_figure)
        mp.setattr("tests.support.slow_simulator.SlowToySimulator.DELAY", 0.0)
        assert main_in_process(toy_args(run_dir, toy_db, simulator=SLOW_SIM)) == 0
    return read_matrix(run_dir)


def _journal(run_dir: Path) -> list[dict]:
    try:
        return json.loads((run_dir / ".runner" / "journal.json").read_text())["records"]
    except (OSError, ValueError, KeyError):
        return []


def _alive_or_fail(process) -> None:
    if process.poll() is not None:
        out, err = process.communicate()
        raise AssertionError(f"build A ended early with exit {process.returncode}:\n{err[-2000:]}")


def _dispatching(run_dir: Path, process, chunks: int = 0):
    """True once A's dispatch step is running (and has finished at least ``chunks`` chunks)."""
    _alive_or_fail(process)
    running = any(r.get("label") == "dispatch" and r.get("status") == "running" for r in _journal(run_dir))
    return running and len(manifest_chunks_safe(run_dir)) >= chunks


def manifest_chunks_safe(run_dir: Path) -> dict:
    try:
        return manifest_chunks(run_dir)
    except (OSError, ValueError, KeyError):
        return {}


def children_of(pid: int) -> set[int]:
    """Live processes whose parent is ``pid`` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if state[state.rindex(")") + 2] != "Z":
            out.add(pid)
    return out


def test_a_second_build_is_refused_at_once_and_the_first_finishes(tmp_path, toy_db, reference):
    run_dir = tmp_path / "run"
    args = toy_args(run_dir, toy_db, simulator=SLOW_SIM)
    a = start_cli(args, SLOW_TOY_DELAY="1.0")  # five chunks: A dispatches for 5 s after B may start
    try:
        wait_for(lambda: _dispatching(run_dir, a), 60, "build A to start dispatching")
        started = time.monotonic()
        b = run_cli(args, timeout=60)
        elapsed = time.monotonic() - started
        assert a.poll() is None, "A finished before B was refused: the race was not tested"
        assert b.returncode == 3, b.stderr
        assert elapsed < 20, f"B waited {elapsed:.1f}s instead of giving up at once"
        message = b.stderr.strip()
        assert len(message.splitlines()) == 1, message
        assert f"pid {a.pid}" in message and f"host {socket.gethostname()}" in message, message
        assert "in use by another runner" in message
        a_out, a_err = a.communicate(timeout=120)
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()
    assert a.returncode == 0, a_err[-2000:]
    assert read_matrix(run_dir) == reference
    assert temp_files(run_dir) == []


def test_after_the_holder_is_killed_a_new_build_starts_and_completes(tmp_path, toy_db, reference, fast_report,
                                                                     monkeypatch):
    """A runs two forked workers; SIGKILL A mid-dispatch. Its workers must die with it (an orphan would keep
    the run directory's lock, shared through fork), and the next build must start and finish by itself."""
    run_dir = tmp_path / "run"
    args = toy_args(run_dir, toy_db, simulator=SLOW_SIM, workers=2)
    a = start_cli(args)
    try:
        wait_for(lambda: _dispatching(run_dir, a, chunks=1) and len(children_of(a.pid)) >= 2, 60,
                 "build A to finish a chunk with its two workers running")
        workers = children_of(a.pid)
        os.kill(a.pid, signal.SIGKILL)
        assert a.wait(timeout=30) == -signal.SIGKILL
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()
    a.stdout.close()
    a.stderr.close()
    try:
        wait_for(lambda: not alive(workers), 10, f"A's workers {sorted(workers)} to die with it")
    finally:
        for pid in alive(workers):  # do not leak orphans when the assertion fails
            os.kill(pid, signal.SIGKILL)
    finished = manifest_chunks(run_dir)
    assert finished, "A was killed before finishing a chunk"

    monkeypatch.setattr("tests.support.slow_simulator.SlowToySimulator.DELAY", 0.0)
    assert main_in_process(args) == 0  # no lock error, no manual cleanup
    assert read_matrix(run_dir) == reference
    after = manifest_chunks(run_dir)
    assert {cid: after[cid] for cid in finished} == finished, "chunks finished before the kill were recomputed"
    assert temp_files(run_dir) == []
