"""The five steps of a matrix build, wired into a checkpointing CommandRunner.

    from commands import build_matrix_runner
    build_matrix_runner("matrix-run").run(["--to", "assemble"])
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Callable, Sequence

from policyengine_us_data.utils import progress_events
from policyengine_us_data.utils.cli_process import configure_logging
from runner import CommandRunner, RunResult

STEPS = ("dataset", "constraints", "dispatch", "verify", "assemble")


class MatrixRunner(CommandRunner):
    """The runner, plus progress a pipeline script sees: unless the caller configured logging, `run()` shows
    this project's messages (phases, one line per chunk) on stderr and keeps third-party chatter off; with
    `on_progress`, every progress event (steps, phases such as the warm-up, chunks with columns and ETA; see
    utils/progress_events.py) is also passed to that callable while `run()` runs."""

    on_progress: Callable[[dict[str, Any]], None] | None = None

    def run(self, args: Sequence[str] | argparse.Namespace | None = None) -> RunResult:
        configure_logging(0)
        if self.on_progress is None:
            return super().run(args)
        stop = progress_events.add_listener(self.on_progress)
        self.on_event = progress_events.emit
        try:
            return super().run(args)
        finally:
            self.on_event = None
            stop()


def build_matrix_runner(run_dir: str | os.PathLike, name: str = "build-matrix",
                        on_progress: Callable[[dict[str, Any]], None] | None = None) -> MatrixRunner:
    """A runner with the five steps registered in order; `on_progress` receives every progress event."""
    from commands.assemble_csr import AssembleCSR
    from commands.build_constraint_cache import BuildConstraintCache
    from commands.dispatch_chunks import DispatchChunks
    from commands.prepare_dataset import PrepareDataset
    from commands.verify_shards import VerifyShards

    runner = MatrixRunner(run_dir, name=name)
    runner.on_progress = on_progress
    runner.register("dataset", 0)(PrepareDataset)
    runner.register("constraints", 1)(BuildConstraintCache)
    runner.register("dispatch", 2)(DispatchChunks)
    runner.register("verify", 3)(VerifyShards)
    runner.register("assemble", 4)(AssembleCSR)
    return runner


__all__ = ["STEPS", "MatrixRunner", "build_matrix_runner"]
