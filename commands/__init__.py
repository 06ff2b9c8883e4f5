"""The five steps of a matrix build, wired into a checkpointing CommandRunner.

    from commands import build_matrix_runner
    build_matrix_runner("matrix-run").run(["--to", "assemble"])
"""

from __future__ import annotations

import argparse
import os
from typing import Sequence

from policyengine_us_data.utils.cli_process import configure_logging
from runner import CommandRunner, RunResult

STEPS = ("dataset", "constraints", "dispatch", "verify", "assemble")


class MatrixRunner(CommandRunner):
    """The runner, plus progress a pipeline script sees: unless the caller configured logging, `run()` shows
    this project's messages (phases, one line per chunk) on stderr and keeps third-party chatter off."""

    def run(self, args: Sequence[str] | argparse.Namespace | None = None) -> RunResult:
        configure_logging(0)
        return super().run(args)


def build_matrix_runner(run_dir: str | os.PathLike, name: str = "build-matrix") -> MatrixRunner:
    """A runner with the five steps registered in order."""
    from commands.assemble_csr import AssembleCSR
    from commands.build_constraint_cache import BuildConstraintCache
    from commands.dispatch_chunks import DispatchChunks
    from commands.prepare_dataset import PrepareDataset
    from commands.verify_shards import VerifyShards

    runner = MatrixRunner(run_dir, name=name)
    runner.register("dataset", 0)(PrepareDataset)
    runner.register("constraints", 1)(BuildConstraintCache)
    runner.register("dispatch", 2)(DispatchChunks)
    runner.register("verify", 3)(VerifyShards)
    runner.register("assemble", 4)(AssembleCSR)
    return runner


__all__ = ["STEPS", "MatrixRunner", "build_matrix_runner"]
