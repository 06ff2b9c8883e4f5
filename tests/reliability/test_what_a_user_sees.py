"""What a person at a terminal sees during a toy build: a live chunk bar with rate and ETA on the
terminal (not swallowed by the step log), the per-chunk lines in the step log, no third-party chatter."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from tests.reliability.conftest import REPO, main_in_process, subprocess_env, toy_args


def _run_on_a_terminal(args: list[str], timeout: float = 180) -> tuple[int, str]:
    """Run `python -m commands.cli ARGS` with stdout and stderr on a pseudo-terminal; return (code, screen)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a real terminal has a size
    proc = subprocess.Popen([sys.executable, "-m", "commands.cli", *args], cwd=REPO, env=subprocess_env(),
                            stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    screen = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            screen += data
        elif proc.poll() is not None:
            break
    code = proc.wait(timeout=30)
    os.close(leader)
    return code, screen.decode("utf-8", "replace")


def test_a_terminal_shows_the_chunk_bar_with_rate_and_eta(tmp_path: Path, toy_db: Path):
    db = toy_db
    run_dir = tmp_path / "run"
    code, screen = _run_on_a_terminal(toy_args(run_dir, db))
    assert code == 0, screen[-2000:]
    assert "chunks: 100%" in screen, screen[-2000:]
    assert "chunk/s" in screen or "s/chunk" in screen  # tqdm's rate
    assert "<00:00" in screen.split("chunks:")[-1]  # tqdm's elapsed<remaining
    assert "NumExpr" not in screen
    log = (run_dir / ".runner" / "logs").glob("*dispatch*")
    text = "".join(p.read_text() for p in log)
    assert re.search(r"chunk \d+ done \((\d+)/\1\)", text) and "\r" not in text  # the last of n chunks


def test_a_pipeline_script_sees_progress_without_configuring_logging(tmp_path: Path, toy_db: Path):
    """`build_matrix_runner(run_dir).run(namespace)` from a script that never touched logging."""
    script = (
        "import argparse, sys\n"
        "from commands import build_matrix_runner\n"
        f"ns = argparse.Namespace(to='assemble', households=60, n_clones=2, chunk_size=25, db={str(toy_db)!r},\n"
        "                        simulator='tests.support.toy_simulator:ToySimulator')\n"
        f"result = build_matrix_runner({str(tmp_path / 'run')!r}).run(ns)\n"
        "sys.exit(result.exit_code)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=subprocess_env(), capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"^chunk \d+ done \(1/\d+\)", done.stderr, re.M), done.stderr[-2000:]
    assert "NumExpr" not in done.stderr


def test_the_report_lists_only_the_parameters_that_define_the_build(tmp_path: Path, toy_db: Path, fast_report):
    run_dir = tmp_path / "run"
    assert main_in_process(toy_args(run_dir, toy_db)) == 0
    params = json.loads((run_dir / "matrix" / "metadata.json").read_text())["parameters"]
    assert params["chunk_size"] == 25 and params["n_clones"] == 2 and params["db"] == str(toy_db)
    assert not {"clean", "status", "list", "dry_run", "to", "force", "workers"} & set(params)


def test_status_into_a_closed_pipe_ends_quietly(tmp_path: Path, toy_db: Path, fast_report):
    """`build-matrix --status | head -1`: the reader leaves first; no `Broken pipe`, no traceback."""
    run_dir = tmp_path / "run"
    assert main_in_process(toy_args(run_dir, toy_db)) == 0
    proc = subprocess.Popen([sys.executable, "-m", "commands.cli", "--run-dir", str(run_dir), "--status"], cwd=REPO,
                            env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first line is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err  # as a shell reports `yes | head -1`
    assert "Broken pipe" not in err and "Traceback" not in err


def test_status_names_the_run_directory_and_prints_reasons_whole(tmp_path: Path, toy_db: Path, fast_report, capsys):
    run_dir = tmp_path / "run"
    assert main_in_process(toy_args(run_dir, toy_db)) == 0
    capsys.readouterr()
    assert main_in_process(["--run-dir", str(run_dir), "--status", "--chunk-size", "12345"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"run directory: {run_dir}"
    reason = next(line for line in out.splitlines() if line.split()[1:2] == ["dispatch"])
    assert "…" not in out and "12345" in reason, out  # the whole reason, the changed value included
    assert main_in_process(["--run-dir", str(tmp_path / "elsewhere"), "--status"]) == 0
    assert f"run directory: {tmp_path / 'elsewhere'} (does not exist yet)" in capsys.readouterr().out
