"""Runner invariants under random sequences: runs, resets, parameter changes, failures, tampering, user files
appearing at random moments, outputs deleted, and kills in the middle of a reset.

Checked after every operation: no user file is ever lost or changed; a run that succeeds leaves exactly the
files of the steps up to its target with today's parameters (plus the user's files) and a second run of the
same target runs nothing; a reset to an intact checkpoint gives back that step's files; a reset killed midway
is finished by the next command and never reported as up to date in between.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from runner import checkpoints

LABELS = ("prepare", "cache", "dispatch", "verify")
PARAM_OF = {"cache": "year", "dispatch": "chunk_size"}


class Killed(BaseException):
    """Stands in for SIGKILL inside a restore: nothing after it runs, no cleanup code either."""


@dataclass
class World:
    params: dict[str, int] = field(default_factory=lambda: {"year": 2024, "chunk_size": 25000})
    user: dict[str, str] = field(default_factory=dict)  # relative path -> text the user wrote
    killed_reset: bool = False


label_index = st.integers(0, len(LABELS) - 1)
failure = st.tuples(st.sampled_from(LABELS), st.sampled_from(["command", "interrupt"]))
run_op = st.tuples(st.just("run"), label_index, st.booleans(), st.one_of(st.none(), st.none(), failure))
operations = st.one_of(
    run_op,
    run_op,
    st.tuples(st.just("reset"), label_index),
    st.tuples(st.just("param"), st.sampled_from(["year", "chunk_size"]), st.sampled_from([1, 2, 3])),
    st.tuples(st.just("tamper"), label_index),
    st.tuples(st.just("user"), st.sampled_from(["notes.txt", "sub/mine.txt", "cache.txt", "verify.txt"])),
    st.tuples(st.just("delete"), label_index),
    st.tuples(st.just("kill-reset"), label_index, st.integers(0, 2)),
)


def _args(world: World, *extra: str) -> list[str]:
    return ["--year", str(world.params["year"]), "--chunk-size", str(world.params["chunk_size"]), *extra]


def _check_user_files(run_dir: Path, world: World) -> None:
    """Every file the user wrote is still there with its text, in place or under moved-aside/."""
    aside = {p.relative_to(run_dir).as_posix(): p.read_text() for p in (run_dir / "moved-aside").rglob("*")
             if p.is_file()} if (run_dir / "moved-aside").exists() else {}
    for rel, text in world.user.items():
        path = run_dir / rel
        here = path.is_file() and path.read_text() == text
        moved = any(k.endswith("/" + rel) and v == text for k, v in aside.items())
        assert here or moved, f"user file {rel} lost"


def _check_build(run_dir: Path, world: World, upto: int, params: bool = True) -> None:
    for index, label in enumerate(LABELS):
        path = run_dir / f"{label}.txt"
        if index <= upto:
            assert path.is_file(), label
            text = path.read_text()
            assert "tampered" not in text
            if params and label in PARAM_OF:
                assert str(world.params[PARAM_OF[label]]) in text


def _kill_restore_after(monkeypatch, calls: int) -> None:
    original = checkpoints.place_file
    count = {"n": 0}

    def place(src, dst):
        count["n"] += 1
        if count["n"] > calls:
            raise Killed()
        return original(src, dst)

    monkeypatch.setattr(checkpoints, "place_file", place)


def _apply(op: tuple, runner, world: World, run_dir: Path, monkeypatch) -> None:
    kind = op[0]
    if kind == "param":
        world.params[op[1]] = op[2]
    elif kind == "user":
        if (run_dir / op[1]).exists() or not run_dir.exists():
            return
        (run_dir / op[1]).parent.mkdir(parents=True, exist_ok=True)
        world.user[op[1]] = f"written by the user before op {len(world.user)}\n"
        (run_dir / op[1]).write_text(world.user[op[1]])
    elif kind == "delete":
        path = run_dir / f"{LABELS[op[1]]}.txt"
        if path.exists() and path.name not in world.user:
            path.unlink()
    elif kind == "tamper":
        path = run_dir / ".runner" / "checkpoints" / LABELS[op[1]] / "files" / f"{LABELS[op[1]]}.txt"
        if path.exists():
            with open(path, "a") as handle:
                handle.write("tampered\n")
    elif kind in ("reset", "kill-reset"):
        if kind == "kill-reset":
            with monkeypatch.context() as patch:
                _kill_restore_after(patch, op[2])
                try:
                    runner.run(_args(world, "--reset-to", LABELS[op[1]]))
                except Killed:
                    world.killed_reset = True
                    status = runner.run(_args(world, "--status"))
                    assert status.exit_code == 0 and status.skipped == () or status.skipped[-1] != LABELS[-1]
            return
        result = runner.run(_args(world, "--reset-to", LABELS[op[1]]))
        assert result.exit_code in (0, 2), result.message
        if result.exit_code == 0:
            _check_build(run_dir, world, op[1], params=False)  # the checkpoint's own params come back
    else:
        _, target, force, fail = op
        runner.toy.fail = {fail[0]: fail[1]} if fail else {}
        result = runner.run(_args(world, "--to", LABELS[target], *(["--force"] if force else [])))
        runner.toy.fail = {}
        world.killed_reset = False
        assert result.exit_code in (0, 1, 130), result.message
        if result.exit_code == 0:
            _check_build(run_dir, world, target)
            again = runner.run(_args(world, "--to", LABELS[target]))
            assert again.exit_code == 0 and again.ran == (), again
    if run_dir.exists():
        _check_user_files(run_dir, world)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(operations, min_size=1, max_size=10))
@example(ops=[("run", 3, False, None), ("tamper", 2), ("run", 3, False, None)])  # repair of a resumable step
@example(ops=[("run", 3, False, None), ("user", "notes.txt"), ("reset", 0), ("run", 3, True, None)])
@example(ops=[("run", 3, False, None), ("delete", 3), ("user", "verify.txt"), ("run", 3, False, None)])
@example(ops=[("run", 3, False, None), ("kill-reset", 0, 0), ("run", 3, False, None)])
@example(ops=[("run", 3, False, None), ("param", "year", 1), ("run", 3, False, ("dispatch", "command")),
              ("reset", 3)])
def test_runner_invariants_under_random_operations(ops, make_runner, tmp_path, monkeypatch):
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        run_dir = Path(tmp) / "run"
        runner = make_runner(run_dir, LABELS)
        world = World()
        for op in ops:
            _apply(op, runner, world, run_dir, monkeypatch)


def test_a_killed_reset_is_finished_by_the_next_command(make_runner, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    runner = make_runner(run_dir, LABELS)
    assert runner.run(["--to", "verify"]).exit_code == 0
    (run_dir / "verify.txt").unlink()
    (run_dir / "prepare.txt").unlink()
    with monkeypatch.context() as patch:
        _kill_restore_after(patch, 0)
        with pytest.raises(Killed):
            runner.run(["--reset-to", "dispatch"])
    assert (run_dir / ".runner" / "reset.json").exists()
    status = runner.run(["--status"])
    assert status.skipped == ()  # nothing reported up to date mid-reset
    result = runner.run(["--to", "dispatch"])
    assert result.exit_code == 0 and result.ran == ()
    assert not (run_dir / ".runner" / "reset.json").exists() and (run_dir / "prepare.txt").exists()
