"""`bin/build-matrix`: `--run-dir` plus the runner's and the steps' flags."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

DEFAULT_RUN_DIR = "matrix-run"


def _split_run_dir(argv: Sequence[str]) -> tuple[str, list[str]]:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--run-dir", default=os.environ.get("BUILD_MATRIX_RUN_DIR", DEFAULT_RUN_DIR))
    known, rest = pre.parse_known_args(list(argv))
    return known.run_dir, rest


def printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def summary_line(run_dir: Path) -> str | None:
    """Where the matrix and report are, once `assemble` has written them."""
    matrix = run_dir / "matrix" / "X.npz"
    if not matrix.exists():
        return None
    return f"matrix: {matrix}  targets: {run_dir / 'matrix' / 'targets.csv'}  report: {run_dir / 'report.md'}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the build; returns the runner's exit code (0 done, 1 step failed, 2 bad input, 3 locked)."""
    from commands import build_matrix_runner

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    argv = sys.argv[1:] if argv is None else argv
    run_dir, rest = _split_run_dir(argv)
    if "-h" in rest or "--help" in rest:
        print(f"build-matrix: --run-dir DIR  the run directory (default ./{DEFAULT_RUN_DIR}, or $BUILD_MATRIX_RUN_DIR)")
    runner = build_matrix_runner(run_dir)
    code = runner.main(rest)
    line = summary_line(Path(run_dir))
    if code == 0 and line and "--to" in rest:
        print(printable(line))  # a run directory name that is not valid UTF-8 must not crash a good build
    return code


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:  # Ctrl-C before the runner took over (imports): one line, no traceback
        print("interrupted (Ctrl-C)", file=sys.stderr)
        raise SystemExit(130) from None
