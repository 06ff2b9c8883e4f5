"""The runner's public API: registration, argument handling, exit codes, and the package's own hygiene."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import sys
from pathlib import Path

import pytest

import runner as runner_pkg
from runner import BaseCommand, BuildState, CommandError, CommandRunner, InputError

RUNNER_SRC = Path(runner_pkg.__file__).parent


class Noop(BaseCommand):
    def run(self, state: BuildState) -> None:
        pass


class WithFlag(BaseCommand):
    params = ("level",)

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("--level", type=int, default=3)

    def run(self, state: BuildState) -> None:
        (state.run_dir / "level.txt").write_text(str(self.args.level))


def test_register_returns_the_class_unchanged(tmp_path):
    runner = CommandRunner(tmp_path / "run")

    @runner.register("first", 0)
    class First(BaseCommand):
        def run(self, state):
            pass

    assert isinstance(First, type) and issubclass(First, BaseCommand)
    assert runner.register("second", 1)(Noop) is Noop
    assert runner.labels == ["first", "second"]


def test_steps_run_in_ascending_order_whatever_the_registration_order(tmp_path):
    runner = CommandRunner(tmp_path / "run")
    runner.register("late", 2.5)(Noop)
    runner.register("early", -1)(WithFlag)
    assert runner.labels == ["early", "late"]


@pytest.mark.parametrize("label", ["", "Upper", "1abc", "has space", "a" * 33, "dot.ted", None])
def test_bad_labels_are_refused(tmp_path, label):
    with pytest.raises(ValueError, match="bad step label"):
        CommandRunner(tmp_path).register(label, 0)


def test_duplicate_label_and_order_are_value_errors(tmp_path):
    runner = CommandRunner(tmp_path)
    runner.register("one", 0)(Noop)
    with pytest.raises(ValueError, match="already registered"):
        runner.register("one", 1)
    with pytest.raises(ValueError, match="already used by step 'one'"):
        runner.register("two", 0)


def test_one_class_under_two_labels_adds_its_arguments_once(tmp_path):
    runner = CommandRunner(tmp_path / "run")
    runner.register("a", 0)(WithFlag)
    runner.register("b", 1)(WithFlag)
    parser = runner.build_parser()
    assert sum("--level" in action.option_strings for action in parser._actions) == 1
    assert any(group.title == "step a, b (WithFlag)" for group in parser._action_groups)
    assert runner.run(["--level", "7"]).ran == ("a", "b")


def test_namespace_input_gets_parser_defaults(tmp_path):
    runner = CommandRunner(tmp_path / "run")
    runner.register("only", 0)(WithFlag)
    result = runner.run(argparse.Namespace(level=9))
    assert result.exit_code == 0 and result.ran == ("only",)
    assert (tmp_path / "run" / "level.txt").read_text() == "9"
    assert runner.run(argparse.Namespace()).ran == ()  # level 9 is remembered from the last run
    assert runner.run(argparse.Namespace(forget_params=True)).ran == ("only",)  # default 3 differs from 9
    assert (tmp_path / "run" / "level.txt").read_text() == "3"


def test_none_means_sys_argv(tmp_path, monkeypatch):
    runner = CommandRunner(tmp_path / "run")
    runner.register("only", 0)(WithFlag)
    monkeypatch.setattr(sys, "argv", ["prog", "--list"])
    assert runner.run(None).exit_code == 0


def test_argparse_errors_and_help_never_exit(tmp_path, capsys):
    runner = CommandRunner(tmp_path / "run")
    runner.register("only", 0)(WithFlag)
    bad = runner.run(["--level", "not-a-number"])
    assert bad.exit_code == 2 and "invalid int value" in bad.message
    assert runner.run(["--no-such-flag"]).exit_code == 2
    assert runner.run(["--help"]).exit_code == 0
    assert "--level" in capsys.readouterr().out
    assert not (tmp_path / "run").exists()  # nothing was created for a usage error or help


def test_unknown_labels_exit_2(toy):
    assert toy.main(["--to", "nope"]) == 2
    result = toy.run(["--reset-to", "nope"])
    assert result.exit_code == 2 and "unknown step" in result.message and "prepare" in result.message


def test_reset_to_a_step_that_never_ran_exits_2(toy):
    result = toy.run(["--reset-to", "cache"])
    assert result.exit_code == 2 and "no checkpoint of cache" in result.message


def test_unwritable_run_dir_exits_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    runner = CommandRunner(blocker / "run")
    runner.register("only", 0)(Noop)
    result = runner.run([])
    assert result.exit_code == 2 and "cannot use run directory" in result.message


def test_undeclared_param_dest_exits_2(tmp_path):
    class Broken(Noop):
        params = ("missing_dest",)

    runner = CommandRunner(tmp_path / "run")
    runner.register("broken", 0)(Broken)
    result = runner.run([])
    assert result.exit_code == 2 and "missing_dest" in result.message


def test_build_state_is_frozen(tmp_path):
    state = BuildState(tmp_path, ("a",), "a", False, "never run")
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.current = "b"


def test_command_error_exit_codes():
    assert CommandError("x").exit_code == 1
    assert CommandError("x", exit_code=2).exit_code == 2
    assert InputError("x").exit_code == 2 and isinstance(InputError("x"), ValueError)
    with pytest.raises(ValueError):
        CommandError("x", exit_code=5)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_runner_imports_only_the_standard_library():
    allowed = set(sys.stdlib_module_names) | {"psutil", "xxhash"}  # both optional, with a fallback
    for path in RUNNER_SRC.glob("*.py"):
        foreign = _imports(path) - allowed
        assert not foreign, f"{path.name} imports {foreign}"


def test_runner_never_calls_sys_exit():
    for path in RUNNER_SRC.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "exit":
                assert not (isinstance(node.value, ast.Name) and node.value.id in ("sys", "os")), path.name
