"""The runner's command line: the parser (runner flags plus one group per step) and the text reports.

argparse normally calls ``sys.exit`` on bad input; here its errors become ``UsageError`` (exit 2) and
``--help`` becomes ``HelpShown`` (exit 0), so the library never exits the interpreter.
"""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path
from typing import Any, NoReturn, Sequence

from .fsutil import printable
from .planning import Step

RUNNER_DESTS = ("to", "reset_to", "force", "status", "list", "dry_run", "clean", "allow_dirty", "forget_params",
                "adopt", "json")


class UsageError(Exception):
    """Bad command-line input or an impossible request (exit 2)."""


class HelpShown(Exception):
    """``--help`` was printed (exit 0)."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if status:
            raise UsageError((message or "").strip() or f"{self.prog}: error")
        raise HelpShown(message or "")


def build_parser(prog: str | None, steps: list[Step]) -> argparse.ArgumentParser:
    """Runner flags, then each step class's own flags in a group named after its label(s)."""
    parser = _Parser(prog=prog, description="Run checkpointed steps in order; see --status for what is done.")
    labels = [s.label for s in steps]
    opts = parser.add_argument_group("runner")
    opts.add_argument("--to", metavar="LABEL", help=f"run every step up to LABEL that is not up to date "
                      f"(default: the last step). Steps: {', '.join(labels) or '(none)'}")
    opts.add_argument("--reset-to", metavar="LABEL", help="restore the run directory to LABEL's checkpoint and "
                      "forget later steps; with --to, go on from there")
    opts.add_argument("--force", action="store_true", help="rerun the --to step even if it is up to date")
    opts.add_argument("--status", action="store_true", help="print a table of every step and exit")
    opts.add_argument("--list", action="store_true", help="print the step labels in order and exit")
    opts.add_argument("--json", action="store_true", help="with --status or --dry-run: print one JSON object "
                      "for scripts instead of the text (keys in docs/contracts.md)")
    opts.add_argument("--dry-run", action="store_true", help="print what would run and why, change nothing")
    opts.add_argument("--clean", action="store_true", help="remove the files the runner wrote and its history "
                      "(files it did not write stay)")
    opts.add_argument("--adopt", action="store_true", help="build in a non-empty directory the runner did not "
                      "create (its files stay yours; recorded in the journal)")
    opts.add_argument("--forget-params", action="store_true",
                      help="use the defaults for every flag not given, instead of the last run's values")
    opts.add_argument("--allow-dirty", action="store_true", help="do not reset the directory before the first "
                      "step that runs")
    seen: dict[type, Any] = {}
    for step in steps:
        if step.cls in seen:
            continue
        same = [s.label for s in steps if s.cls is step.cls]
        group = parser.add_argument_group(f"step {', '.join(same)} ({step.cls.__name__})")
        try:
            step.cls.add_arguments(group)
        except argparse.ArgumentError as exc:
            raise UsageError(f"step {step.label!r}: its arguments clash with another step's: {exc}") from exc
        seen[step.cls] = group
    return parser


def parse(parser: argparse.ArgumentParser, args: Sequence[str] | argparse.Namespace) -> argparse.Namespace:
    """An argv list is parsed; a Namespace gets the parser's defaults for every attribute it lacks."""
    if not isinstance(args, argparse.Namespace):
        return parser.parse_args(list(args))
    merged = argparse.Namespace()
    for action in parser._actions:  # noqa: SLF001 - the only way to reach defaults without parsing
        if action.dest == argparse.SUPPRESS or action.dest == "help":
            continue
        if action.required and not hasattr(args, action.dest):
            raise UsageError(f"missing required argument {'/'.join(action.option_strings) or action.dest}")
        default = action.default if action.default is not argparse.SUPPRESS else None
        setattr(merged, action.dest, default)
    for key, value in vars(args).items():
        setattr(merged, key, value)
    check_types(parser, merged)
    return merged


def _type_ok(action: argparse.Action, value: Any) -> bool:
    if value is None or value is action.default:
        return True
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction,  # noqa: SLF001
                           argparse.BooleanOptionalAction)):
        return isinstance(value, bool)
    if action.nargs not in (None, "?"):
        return isinstance(value, (list, tuple)) and all(_type_ok(_single(action), v) for v in value)
    kind = action.type
    if kind in (int, float):
        return isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
    if kind is None or kind is str:
        return isinstance(value, (str, os.PathLike))
    return True  # a custom type function: its own checks ran only for argv; the step validates


def _single(action: argparse.Action) -> argparse.Action:
    return argparse.Action(action.option_strings, action.dest, type=action.type)


def check_types(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> None:
    """A Namespace given to ``run`` must hold what the parser would have produced (``25``, not ``"25"``)."""
    for action in parser._actions:  # noqa: SLF001
        if action.dest in (argparse.SUPPRESS, "help") or not hasattr(ns, action.dest):
            continue
        value = getattr(ns, action.dest)
        flag = "/".join(action.option_strings) or action.dest
        if not _type_ok(action, value):
            want = getattr(action.type, "__name__", "a string") if action.type else "a string"
            raise UsageError(f"{flag}: expected {want}, got {type(value).__name__} {value!r}; "
                             f"pass the value as the command line would parse it")
        if action.choices is not None and value is not None and value is not action.default \
                and value not in action.choices:
            raise UsageError(f"{flag}: {value!r} is not one of {sorted(map(str, action.choices))}")


def check_input_files(steps: list[Step], ns: argparse.Namespace, run_dir: Path) -> None:
    """Every input file a step names must be a regular file outside the run directory (a FIFO or device would
    hang the hashing; a file inside could be replaced by a reset). Checked before anything reads them."""
    root = os.path.realpath(run_dir)
    for step in steps:
        for given in step.cls.input_files(ns):
            path = Path(given)
            try:
                st = os.stat(path)
            except OSError:
                continue  # missing: the step's own validation names it
            if not stat.S_ISREG(st.st_mode):
                raise UsageError(f"input file {printable(str(path))} (step {step.label}) {_kind(st.st_mode)}, "
                                 "not a regular file; pass the path of the file itself")
            real = os.path.realpath(path)
            if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
                raise UsageError(f"input file {printable(str(path))} (step {step.label}) is inside the run "
                                 f"directory, where a reset could replace it; copy it outside and pass that path")


def _kind(mode: int) -> str:
    """What a non-regular file is, in words (`is a directory`, ...)."""
    for test, words in ((stat.S_ISDIR, "is a directory"), (stat.S_ISFIFO, "is a FIFO (named pipe)"),
                        (stat.S_ISCHR, "is a character device"), (stat.S_ISBLK, "is a block device"),
                        (stat.S_ISSOCK, "is a socket")):
        if test(mode):
            return words
    return "is not a regular file"


def format_list(steps: list[Step]) -> str:
    """``--list``: one label per line, in run order."""
    return "\n".join(step.label for step in steps)
