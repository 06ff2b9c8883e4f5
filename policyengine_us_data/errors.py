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
