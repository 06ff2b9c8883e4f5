"""Steps 3 and 4: compute every chunk's shard (resuming on good ones), then prove the shards are sound."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from policyengine_us_data.shards.chunk_plan import ChunkResult
from policyengine_us_data.dispatch.chunked_matrix_assembler import ChunkedMatrixAssembler
from policyengine_us_data.errors import ArtifactError


@dataclass
class ChunkRun:
    """What `run_chunks` did: the chunk directory and plan, every chunk's outcome (reused ones marked)."""

    chunk_dir: Path
    chunk_size: int
    chunk_plan: str
    lineage: dict[str, Any]
    lineage_signature: str
    n_rows: int
    n_columns: int
    wall_seconds: float = 0.0
    warm_up_seconds: float | None = None  # the local pool's measured warm-up (policyengine-us's first simulation)
    run_id: str | None = None
    results: list[ChunkResult] = field(default_factory=list)

    @property
    def computed(self) -> int:
        return sum(1 for r in self.results if not r.reused)

    @property
    def reused(self) -> int:
        return sum(1 for r in self.results if r.reused)

    def to_json(self) -> dict[str, Any]:
        """`chunks/dispatch.json`: read back with `from_json` by `verify`, `assemble` and the report."""
        obj = asdict(self)
        obj.update(chunk_dir=str(self.chunk_dir), chunks=len(self.results), computed=self.computed,
                   reused=self.reused, results=[r.to_json() for r in self.results])
        return obj

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "ChunkRun":
        names = set(cls.__dataclass_fields__) - {"results", "chunk_dir"}
        return cls(chunk_dir=Path(obj["chunk_dir"]), results=[ChunkResult.from_json(r) for r in obj["results"]],
                   **{k: obj[k] for k in names if k in obj})


def chunk_assembler(state_dir: Path, chunk_dir: Path, *, chunk_size: int, chunk_plan: str, **options: Any
                    ) -> ChunkedMatrixAssembler:
    """The coordinator of one build's chunks (`options`: dispatcher, resume, deep_verify, progress, ...)."""
    return ChunkedMatrixAssembler(state_dir, chunk_dir, chunk_size=chunk_size, chunk_plan=chunk_plan, **options)


def run_chunks(state_dir: Path, chunk_dir: Path, *, chunk_size: int, chunk_plan: str, dispatcher=None,
               resume: bool = True, restart_other_lineage: bool = False, progress: bool = False,
               before_dispatch: Callable[[ChunkedMatrixAssembler], None] | None = None) -> ChunkRun:
    """Compute every chunk whose shard is not already good, on the dispatcher's backend, in the directory the
    dispatcher decides (`chunk_dir` unless it writes elsewhere). Raises ChunkBuildError when chunks still fail.

    `resume` keeps verified shards of this lineage; another lineage's are dropped with `restart_other_lineage`
    (the runner: they are its own) or refused with LineageMismatch (upstream's callers).
    """
    where = dispatcher.shard_dir(chunk_dir) if dispatcher is not None else Path(chunk_dir)
    assembler = chunk_assembler(state_dir, where, chunk_size=chunk_size, chunk_plan=chunk_plan, dispatcher=dispatcher,
                                resume=resume, restart_other_lineage=restart_other_lineage, progress=progress)
    assembler.open_manifest()
    if before_dispatch is not None:
        before_dispatch(assembler)
    resume_plan = assembler.dispatch()
    report = assembler.report
    return ChunkRun(where, assembler.chunk_size, assembler.chunk_plan, assembler.lineage, assembler.signature,
                    assembler.n_rows, assembler.n_columns, wall_seconds=report.wall_seconds if report else 0.0,
                    warm_up_seconds=getattr(dispatcher, "warm_up_seconds", None),
                    run_id=getattr(dispatcher, "run_id", None), results=assembler.outcomes(resume_plan))


def verify_chunks(state_dir: Path, run: ChunkRun, *, deep: bool) -> dict[str, Any]:
    """Prove every planned shard is present, intact and of this lineage, and that their column sets cover every
    column once; returns the summary (its `damaged` list names each bad chunk and why)."""
    assembler = chunk_assembler(state_dir, run.chunk_dir, chunk_size=run.chunk_size, chunk_plan=run.chunk_plan,
                                deep_verify=deep, progress=False)
    plan = assembler.classify()
    by_id = {chunk.chunk_id: chunk for chunk in plan.todo}
    damaged = [{"chunk_id": cid, "path": by_id[cid].shard_path, "defect": reason}
               for cid, reason in sorted(plan.reasons.items())]
    uncovered = [] if damaged else _cover_defects(assembler)  # every shard sound: prove the cover
    damaged += uncovered
    return {
        "chunk_plan": assembler.chunk_plan,
        "chunks_checked": len(plan.todo) + len(plan.done),
        "intact": len(plan.done) - len(uncovered),
        "columns_covered_once": 0 if damaged else assembler.n_columns,
        "damaged": damaged,
        "deep": bool(deep),
        "lineage_signature": assembler.signature,
    }


def _cover_defects(assembler: ChunkedMatrixAssembler) -> list[dict[str, Any]]:
    """Prove the intact shards' column sets cover every column once; else name the offending shard."""
    try:
        assembler.prove_cover()
    except ArtifactError as exc:
        by_path = {chunk.shard_path: chunk.chunk_id for chunk in assembler.plans()}
        return [{"chunk_id": by_path.get(str(exc.path), -1), "path": str(exc.path), "defect": exc.defect}]
    return []
