"""What both command lines share about their process: log levels, `--version`, and a prompt exit.

Third-party libraries (numexpr, h5py, urllib3, ...) log at INFO; a user asked for the build's own
progress, so only this project's loggers speak at INFO unless `-v` is given. A finished build
returns the prompt at once: tearing down a process that holds policyengine-us's frozen heap and a
pool's bookkeeping took 40-67 s, so the command-line entry points flush and leave with `os._exit`.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib import metadata

OWN_LOGGERS = ("policyengine_us_data", "commands", "runner", "__main__")
VERSIONED_PACKAGES = ("policyengine-us", "policyengine-core", "modal")
PROJECT_DISTRIBUTION = "policyengine-us-data-matrix"


def configure_logging(verbosity: int = 0) -> None:
    """Show this project's progress (INFO; WARNING with -q; DEBUG with -v) and keep third parties quiet.

    Leaves the logging setup alone when the caller has configured the root logger already.
    """
    root = logging.getLogger()
    if root.handlers:
        return
    own_level = {-1: logging.WARNING, 0: logging.INFO}.get(max(verbosity, -1), logging.DEBUG)
    third_party_level = logging.INFO if verbosity > 0 else logging.WARNING
    logging.basicConfig(level=third_party_level, format="%(message)s", stream=sys.stderr)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(own_level)


def verbosity_from(argv: list[str]) -> tuple[int, list[str]]:
    """Take -q/--quiet and -v/--verbose out of `argv`; returns (level, the rest)."""
    level = 0
    rest = []
    for arg in argv:
        if arg in ("-q", "--quiet"):
            level -= 1
        elif arg in ("-v", "--verbose"):
            level += 1
        else:
            rest.append(arg)
    return level, rest


def version_line(prog: str) -> str:
    """`prog 0.1.0 (policyengine-us 2.68.0, ...)`, read from package metadata without importing anything."""
    parts = [f"{name} {_installed_version(name)}" for name in VERSIONED_PACKAGES]
    return f"{prog} {_installed_version(PROJECT_DISTRIBUTION)} ({', '.join(parts)})"


def _installed_version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def exit_now(code: int) -> None:
    """Flush what was printed and end the process with `code`, skipping interpreter teardown."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
