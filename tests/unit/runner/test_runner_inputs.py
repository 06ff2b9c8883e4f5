"""Input files named by a step: editing one makes the step stale, copying or touching one does not."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from runner import BaseCommand, BuildState, CommandRunner
from runner.inputs import CACHE_NAME, MISSING, InputDigests, sha256_of


class SourceStep(BaseCommand):
    """Copies the file named by --source (outside the run directory) into the run directory."""

    params = ("source",)

    def run(self, state: BuildState) -> None:
        self.runner.calls.append((state.current, state.reason))
        data = Path(self.args.source).read_bytes() if self.args.source else b""
        tmp = state.run_dir / "source.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, state.run_dir / "source.bin")

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("--source", default=None)

    @classmethod
    def input_files(cls, args):
        return [args.source] if args.source else []


class AfterStep(BaseCommand):
    def run(self, state: BuildState) -> None:
        self.runner.calls.append((state.current, state.reason))


def _runner(run_dir: Path) -> CommandRunner:
    runner = CommandRunner(run_dir, name="inputs")
    runner.calls = []
    runner.register("source", 0)(SourceStep)
    runner.register("after", 1)(AfterStep)
    return runner


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "households.h5"
    path.write_bytes(b"first version of the data")
    return path


def _status_rows(runner: CommandRunner, argv: list[str], capsys) -> dict[str, str]:
    capsys.readouterr()
    runner.main([*argv, "--status"])
    return {line.split()[1]: line for line in capsys.readouterr().out.splitlines()[1:]}


def test_editing_an_input_file_makes_the_step_and_later_ones_stale(run_dir, source, capsys):
    runner = _runner(run_dir)
    argv = ["--source", str(source)]
    assert runner.run(argv).ran == ("source", "after")
    assert runner.run(argv).ran == ()
    source.write_bytes(b"second version of the data")
    rows = _status_rows(runner, argv, capsys)
    assert "stale  input file changed: /" in rows["source"]  # the table shortens long reasons
    assert "an earlier step will re-run: source" in rows["after"]
    assert runner.run(argv).ran == ("source", "after")
    assert runner.calls[-2] == (None, f"input file changed: {source}")


def test_touching_or_replacing_with_identical_bytes_changes_nothing(run_dir, source, tmp_path):
    runner = _runner(run_dir)
    argv = ["--source", str(source)]
    runner.run(argv)
    os.utime(source, ns=(1, 1))
    assert runner.run(argv).ran == ()
    copy = tmp_path / "copy.h5"
    shutil.copyfile(source, copy)
    os.replace(copy, source)  # same bytes, new inode and mtime
    assert runner.run(argv).ran == ()


def test_a_deleted_input_file_is_named(run_dir, source, capsys):
    runner = _runner(run_dir)
    argv = ["--source", str(source)]
    runner.run(argv)
    source.unlink()
    rows = _status_rows(runner, argv, capsys)
    assert "stale  input file missing: /" in rows["source"]
    assert runner.run(argv).exit_code != 0  # the step reads the file, so it cannot run without it


def test_an_unchanged_file_is_not_read_again(source, tmp_path, monkeypatch):
    cache = tmp_path / CACHE_NAME
    first = InputDigests(cache)
    digest = first.digest(source)
    assert digest == sha256_of(source) and digest.startswith("sha256:")
    first.save()
    assert json.loads(cache.read_text())[str(source)]["digest"] == digest

    def no_reading(path):
        raise AssertionError("hashed a file whose size, mtime and inode did not change")

    monkeypatch.setattr("runner.inputs.sha256_of", no_reading)
    assert InputDigests(cache).digest(source) == digest


def test_a_damaged_cache_is_ignored_and_a_missing_file_reported(source, tmp_path):
    cache = tmp_path / CACHE_NAME
    cache.write_text("{not json")
    digests = InputDigests(cache)
    assert digests.digest(source) == sha256_of(source)
    assert digests.digest(tmp_path / "absent.h5") == MISSING
    cache.write_text(json.dumps({str(source): {"stat": "x", "digest": 7}}))
    assert InputDigests(cache).digest(source) == sha256_of(source)


def test_status_does_not_write_the_cache(run_dir, source, capsys):
    runner = _runner(run_dir)
    argv = ["--source", str(source)]
    runner.run(argv)
    cache = run_dir / ".runner" / CACHE_NAME
    assert cache.is_file()
    cache.unlink()
    _status_rows(runner, argv, capsys)
    assert not cache.exists()
