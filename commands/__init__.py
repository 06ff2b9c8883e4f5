"""The five steps of a matrix build, wired into a checkpointing CommandRunner.

    from commands import build_matrix_runner
    build_matrix_runner("matrix-run").run(["--to", "assemble"])
"""

from __future__ import annotations

import os

from runner import CommandRunner

STEPS = ("dataset", "constraints", "dispatch", "verify", "assemble")


def build_matrix_runner(run_dir: str | os.PathLike, name: str = "build-matrix") -> CommandRunner:
    """A runner with the five steps registered in order."""
    from commands.assemble_csr import AssembleCSR
    from commands.build_constraint_cache import BuildConstraintCache
    from commands.dispatch_chunks import DispatchChunks
    from commands.prepare_dataset import PrepareDataset
    from commands.verify_shards import VerifyShards

    runner = CommandRunner(run_dir, name=name)
    runner.register("dataset", 0)(PrepareDataset)
    runner.register("constraints", 1)(BuildConstraintCache)
    runner.register("dispatch", 2)(DispatchChunks)
    runner.register("verify", 3)(VerifyShards)
    runner.register("assemble", 4)(AssembleCSR)
    return runner


__all__ = ["STEPS", "build_matrix_runner"]
