"""Toy steps for the runner's tests: each writes its own small output file, atomically, and can be told to fail.

``make_runner(run_dir)`` registers five steps in the shape of the real build (prepare, cache, dispatch, verify,
assemble). Every step records its calls in ``runner.toy.calls`` and reads failure orders from ``runner.toy.fail``.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from runner import BaseCommand, BuildState, CommandError, CommandRunner, InputError

LABELS = ("prepare", "cache", "dispatch", "verify", "assemble")


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclass
class ToyControl:
    """What the toy steps did and what they should do next."""

    calls: list[tuple[str, BuildState]] = field(default_factory=list)
    fail: dict[str, str] = field(default_factory=dict)  # label -> command|input|error|interrupt|sigterm

    @property
    def ran(self) -> list[str]:
        return [label for label, _ in self.calls]


class ToyStep(BaseCommand):
    """Writes ``<name>.partial`` first, then ``<name>.txt``; removes the partial file when it succeeds."""

    name = "toy"

    def run(self, state: BuildState) -> None:
        toy: ToyControl = self.runner.toy
        toy.calls.append((self.name, state))
        partial = state.run_dir / f"{self.name}.partial"
        write_atomic(partial, "partial\n")
        self._maybe_fail(toy.fail.pop(self.name, None))
        values = {p: getattr(self.args, p) for p in self.params}
        write_atomic(state.run_dir / f"{self.name}.txt", f"{self.name} {json.dumps(values, sort_keys=True)}\n")
        partial.unlink()

    def _maybe_fail(self, how: str | None) -> None:
        if how == "command":
            raise CommandError(f"{self.name} could not finish")
        if how == "input":
            raise InputError(f"{self.name}: bad input file")
        if how == "error":
            raise RuntimeError(f"{self.name} crashed")
        if how == "interrupt":
            raise KeyboardInterrupt
        if how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the runner's handler raises here


class CacheStep(ToyStep):
    name = "cache"
    outputs = ("cache.txt", "cache.partial")
    params = ("year",)

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("--year", type=int, default=2024)


class DispatchStep(ToyStep):
    name = "dispatch"
    outputs = ("dispatch.txt", "dispatch.partial")
    params = ("chunk_size",)
    resumable = True

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("--chunk-size", type=int, default=25000)


def toy_class(label: str) -> type[ToyStep]:
    special = {"cache": CacheStep, "dispatch": DispatchStep}
    if label in special:
        return special[label]
    return type(f"Toy_{label}", (ToyStep,), {"name": label, "outputs": (f"{label}.txt", f"{label}.partial")})


def _make_runner(run_dir: Path, labels: tuple[str, ...] = LABELS) -> CommandRunner:
    runner = CommandRunner(run_dir, name="toy-build")
    runner.toy = ToyControl()
    for order, label in enumerate(labels):
        runner.register(label, order)(toy_class(label))
    return runner


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch):
    """Durability is not under test here; fsync on a shared disk costs ~10 ms a write."""
    monkeypatch.setattr("runner.fsutil.FSYNC", False)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"


@pytest.fixture
def make_runner():
    """``make_runner(run_dir, labels=LABELS)`` -> a CommandRunner with toy steps and ``.toy`` control."""
    return _make_runner


@pytest.fixture
def toy(run_dir: Path) -> CommandRunner:
    return _make_runner(run_dir)


@pytest.fixture
def live():
    """``live(run_dir)`` -> {relative path: text} of the run directory outside .runner/."""
    return _live_files


def _live_files(run_dir: Path) -> dict[str, str]:
    """Relative path -> text of every file in the run directory outside .runner/."""
    out = {}
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir).as_posix()
        if rel.startswith(".runner") or not path.is_file():
            continue
        out[rel] = path.read_text()
    return out
