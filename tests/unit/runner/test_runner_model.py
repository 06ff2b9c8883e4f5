"""Planner model check: random runs, resets, parameter changes, failures and tampering, against a tiny model.

The model knows only this: steps form a chain; a step is up to date when it has an intact checkpoint taken with
today's parameters; the first stale step up to the target runs, and every step after it up to the target too;
running a step forgets its own and all later checkpoints; a failed resumable step resumes (dirty) on the next
run when nothing else happened in between and its parameters are unchanged; a resumable step whose own
checkpoint was tampered with is repaired (runs dirty, on top of its own outputs).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

LABELS = ("prepare", "cache", "dispatch", "verify")
PARAM_OF = {"cache": "year", "dispatch": "chunk_size"}
RESUMABLE = {"dispatch"}


@dataclass
class Model:
    params: dict[str, int] = field(default_factory=lambda: {"year": 2024, "chunk_size": 25000})
    ckpt: dict[str, dict] = field(default_factory=dict)  # label -> {"param": value or None, "damaged": bool}
    unfinished: tuple[str, int | None] | None = None  # the latest record: a failed resumable attempt

    def param(self, label: str) -> int | None:
        return self.params.get(PARAM_OF.get(label, ""), None)

    def stale(self, label: str) -> bool:
        c = self.ckpt.get(label)
        return c is None or c["damaged"] or c["param"] != self.param(label)

    def forget_from(self, index: int) -> None:
        for label in LABELS[index:]:
            self.ckpt.pop(label, None)

    def run(self, target: int, force: bool, fail: tuple[str, str] | None) -> tuple[list[str], int, bool]:
        """Steps that complete, the exit code, and whether the first step runs dirty."""
        first = next((i for i in range(target + 1) if self.stale(LABELS[i])), None)
        if first is None and force:
            first = target
        if first is None:
            return [], 0, False
        label = LABELS[first]
        damaged = self.ckpt.get(label, {}).get("damaged", False)
        dirty = label in RESUMABLE and (self.unfinished == (label, self.param(label)) or damaged)
        ran = []
        for i in range(first, target + 1):
            label = LABELS[i]
            self.forget_from(i)
            if fail and fail[0] == label:
                self.unfinished = (label, self.param(label)) if label in RESUMABLE else None
                return ran, {"command": 1, "interrupt": 130}[fail[1]], dirty
            self.ckpt[label] = {"param": self.param(label), "damaged": False}
            self.unfinished = None
            ran.append(label)
        return ran, 0, dirty

    def reset_to(self, index: int) -> int:
        c = self.ckpt.get(LABELS[index])
        if c is None or c["damaged"]:
            return 2
        self.forget_from(index + 1)
        self.unfinished = None
        return 0

    def tamper(self, index: int) -> bool:
        if LABELS[index] not in self.ckpt:
            return False
        for label in LABELS[index:]:
            if label in self.ckpt:
                self.ckpt[label]["damaged"] = True
        return True


label_index = st.integers(0, len(LABELS) - 1)
failure = st.tuples(st.sampled_from(LABELS), st.sampled_from(["command", "interrupt"]))
run_op = st.tuples(st.just("run"), label_index, st.booleans(), st.one_of(st.none(), st.none(), failure))
operations = st.one_of(
    run_op,
    run_op,
    st.tuples(st.just("reset"), label_index),
    st.tuples(st.just("param"), st.sampled_from(["year", "chunk_size"]), st.sampled_from([1, 2, 3])),
    st.tuples(st.just("tamper"), label_index),
)


def _args(model: Model, *extra: str) -> list[str]:
    return ["--year", str(model.params["year"]), "--chunk-size", str(model.params["chunk_size"]), *extra]


def _check_live(run_dir: Path, model: Model, upto: int) -> None:
    files = sorted(p.name for p in run_dir.iterdir() if p.name != ".runner")
    assert files == sorted(f"{label}.txt" for label in LABELS[: upto + 1])
    for label in LABELS[: upto + 1]:
        text = (run_dir / f"{label}.txt").read_text()
        assert "tampered" not in text
        if label in PARAM_OF and model.ckpt[label]["param"] is not None:
            assert str(model.ckpt[label]["param"]) in text


def _apply(op: tuple, runner, model: Model, run_dir: Path) -> None:
    kind = op[0]
    if kind == "param":
        model.params[op[1]] = op[2]
    elif kind == "tamper":
        if model.tamper(op[1]):
            label = LABELS[op[1]]
            with open(run_dir / ".runner" / "checkpoints" / label / "files" / f"{label}.txt", "a") as handle:
                handle.write("tampered\n")
    elif kind == "reset":
        expected = model.reset_to(op[1])
        assert runner.run(_args(model, "--reset-to", LABELS[op[1]])).exit_code == expected
        if expected == 0:
            _check_live(run_dir, model, op[1])
    else:
        _, target, force, fail = op
        if fail:
            runner.toy.fail = {fail[0]: fail[1]}
        runner.toy.calls.clear()
        expected_ran, expected_code, expected_dirty = model.run(target, force, fail)
        result = runner.run(_args(model, "--to", LABELS[target], *(["--force"] if force else [])))
        runner.toy.fail = {}
        assert (list(result.ran), result.exit_code) == (expected_ran, expected_code), op
        if runner.toy.calls:
            assert runner.toy.calls[0][1].dirty == expected_dirty, op
        if expected_ran and expected_code == 0:
            _check_live(run_dir, model, target)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(operations, min_size=1, max_size=10))
@example(ops=[("run", 3, False, None), ("tamper", 2), ("run", 3, False, None)])  # repair of a resumable step
@example(ops=[("run", 3, False, None), ("tamper", 2), ("param", "chunk_size", 2), ("run", 2, False, None)])
@example(ops=[("run", 2, False, ("dispatch", "command")), ("tamper", 1), ("run", 3, False, None)])
def test_planner_agrees_with_the_model(ops, make_runner, tmp_path):
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        run_dir = Path(tmp) / "run"
        runner = make_runner(run_dir, LABELS)
        model = Model()
        for op in ops:
            _apply(op, runner, model, run_dir)
