"""`bin/build-matrix`: `--run-dir` plus the runner's and the steps' flags."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from policyengine_us_data.utils.cli_process import configure_logging, exit_now, verbosity_from, version_line

DEFAULT_RUN_DIR = "matrix-run"
PROG = "build-matrix"
EXIT_PIPE_CLOSED = 141  # what a shell reports for a writer whose reader left (128 + SIGPIPE)

HELP_EPILOG = f"""\
{PROG} also takes:
  --run-dir DIR   the run directory (default ./{DEFAULT_RUN_DIR}, or $BUILD_MATRIX_RUN_DIR)
  -q / -v         quieter (warnings only) / more verbose (debug, and third-party libraries' messages)
  --version       print the versions of this project, policyengine-us and modal, and exit
  --progress json progress as one JSON object per line on stderr (steps, phases, chunks with columns and
                  ETA), instead of the bar and log lines; warnings and errors stay plain text

examples:
  {PROG} --to assemble                          build on the embedded default data
  {PROG} --status                               each step: done / stale (and why) / pending
  {PROG} --dry-run --to assemble                what would run, why, chunk count and time estimate
  {PROG} --status --json                        the same table for scripts (keys: docs/contracts.md)
  {PROG} --reset-to dispatch --to assemble      keep the shards, redo verify and assemble
  {PROG} --to assemble --dataset ecps.h5 --db policy_data.db --n-clones 430 --chunk-size 25000

exit codes:
  0 done   1 a step failed   2 bad input (nothing changed)   3 the run directory is locked by another build
  130 interrupted (Ctrl-C)   141 the reader of the output left (`--status | head -1`)   143 terminated (SIGTERM)
"""


def _split_own_flags(argv: Sequence[str]) -> tuple[str, str, list[str]]:
    """(--run-dir, --progress, the rest for the runner)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--run-dir", default=os.environ.get("BUILD_MATRIX_RUN_DIR", DEFAULT_RUN_DIR))
    pre.add_argument("--progress", choices=("bar", "json"), default="bar")
    known, rest = pre.parse_known_args(list(argv))
    return known.run_dir, known.progress, rest


def printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def summary_line(run_dir: Path) -> str | None:
    """Where the matrix and report are, once `assemble` has written them (never after --dry-run or --status,
    where a matrix on disk may be stale)."""
    matrix = run_dir / "matrix" / "X.npz"
    if not matrix.exists():
        return None
    return f"matrix: {matrix}  targets: {run_dir / 'matrix' / 'targets.csv'}  report: {run_dir / 'report.md'}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the build; returns the runner's exit code (0 done, 1 step failed, 2 bad input, 3 locked)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--version" in argv:
        print(version_line(PROG))
        return 0
    verbosity, argv = verbosity_from(argv)
    try:
        run_dir, progress, rest = _split_own_flags(argv)
    except SystemExit:  # argparse's own message (a bad --progress value) is on stderr already
        return 2
    configure_logging(verbosity - 1 if progress == "json" else verbosity)  # JSON mode: the events, not INFO lines
    from commands import build_matrix_runner
    from policyengine_us_data.utils import progress_events

    progress_events.want_bar(progress == "bar")
    runner = build_matrix_runner(run_dir, on_progress=progress_events.json_lines(sys.stderr)
                                 if progress == "json" else None)
    try:
        code = runner.main(rest)
        if "-h" in rest or "--help" in rest:
            print(HELP_EPILOG)
        line = summary_line(Path(run_dir))
        if code == 0 and line and "--to" in rest and not {"--dry-run", "--status"} & set(rest):
            print(printable(line))  # a run directory name that is not valid UTF-8 must not crash a good build
        sys.stdout.flush()
    except BrokenPipeError:  # `build-matrix --status | head -1`: the reader has gone, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE_CLOSED
    return code


if __name__ == "__main__":
    try:
        exit_now(main())
    except KeyboardInterrupt:  # Ctrl-C before the runner took over (imports): one line, no traceback
        print("interrupted (Ctrl-C)", file=sys.stderr)
        exit_now(130)
