"""The project's error types.

`InputError` is what a user can cause and fix (a bad file, a bad flag): its message names the
problem, where it is, and what to do. The others say an artefact we wrote earlier is damaged
or belongs to another build; callers recompute rather than trust it.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input a user can fix; the message names the problem and the fix."""


class DatasetError(InputError):
    """A household dataset file is missing, unreadable or inconsistent."""


class TargetError(InputError):
    """The target database is missing something or holds values we cannot use."""


class ArtifactError(Exception):
    """A file we wrote earlier is damaged, truncated, or from another build."""

    def __init__(self, path: object, defect: str) -> None:
        self.path = str(path)
        self.defect = defect
        super().__init__(f"{self.path}: {defect}")


class ShardError(ArtifactError):
    """A chunk shard failed verification."""


class ManifestError(ArtifactError):
    """The chunk manifest is unreadable or from another build."""


class LineageMismatch(InputError):
    """Existing shards were built from different inputs than this run's.

    The message starts with upstream's phrase ("Chunk cache lineage mismatch for <where>"), which upstream's
    callers match on, then says which fields differ and what to do.
    """

    def __init__(self, differing: list[str], where: str = "") -> None:
        self.differing = list(differing)
        super().__init__(
            f"Chunk cache lineage mismatch for {where or 'the chunk directory'}: existing chunks were built "
            "from different inputs: " + "; ".join(self.differing)
            + ". Rerun without resume (or remove the chunk directory) to rebuild them."
        )


class RunLeaseHeld(Exception):
    """Another live coordinator holds this run id's lease on the staging volume (exit 3, like a locked run)."""

    def __init__(self, run_id: str, holder: dict, stale_after_s: float | None = None) -> None:
        self.run_id = run_id
        self.holder = dict(holder)
        who = ", ".join(f"{k} {holder.get(k)}" for k in ("holder", "host", "pid", "container") if holder.get(k))
        dead = f" (a holder silent for {stale_after_s / 60:g} min counts as dead)" if stale_after_s else ""
        super().__init__(
            f"run id {run_id!r} is in use by another coordinator ({who}; last heartbeat "
            f"{holder.get('heartbeat_utc', '?')}). Wait for it to finish{dead}, stop it, or pick another --run-id."
        )


class StaleWorkerCode(Exception):
    """The deployed worker runs other code than the coordinator: shards would carry a false lineage."""
