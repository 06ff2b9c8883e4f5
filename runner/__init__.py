"""A small, general checkpointing command runner.

Register ``BaseCommand`` subclasses on a ``CommandRunner`` with a label and an order; ``runner.main(argv)``
runs every step up to ``--to`` that is not up to date, checkpointing the files it wrote (hard links, O(files))
after each one; files it did not write are never removed or overwritten. Standard library only (xxhash and
psutil are used when present): it can be lifted into another project unchanged.
"""

from .checkpoints import CheckpointError
from .command import BaseCommand, BuildState, CommandError, InputError
from .lock import RunDirLocked
from .runner import CommandRunner
from .session import RunResult

__all__ = [
    "BaseCommand",
    "BuildState",
    "CheckpointError",
    "CommandError",
    "CommandRunner",
    "InputError",
    "RunDirLocked",
    "RunResult",
]
