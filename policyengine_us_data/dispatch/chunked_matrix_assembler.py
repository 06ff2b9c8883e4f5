"""ChunkedMatrixAssembler: partition, resume, dispatch, progress, assembly.

The coordinator of a chunked build. It knows which chunks exist and which are good, hands the
rest to a `ChunkDispatcher` (in-process, a local pool, or Modal: it cannot tell which), records
every finished chunk in the manifest as it arrives, and streams the shards into the final CSR.
A chunk is skipped on resume only when its shard passes verification and carries this build's
lineage; everything else is recomputed.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from policyengine_us_data.kernel import cell_rules
from policyengine_us_data.kernel import chunk_kernel
from policyengine_us_data.shards import chunk_plan
from policyengine_us_data.targets import constraints
from policyengine_us_data.kernel import entity_clone
from policyengine_us_data.kernel import simulator
from policyengine_us_data.kernel import spm_thresholds
from policyengine_us_data.kernel import takeup
from policyengine_us_data.kernel.build_state import GEOGRAPHY_FILE, read_state_meta
from policyengine_us_data.shards.chunk_plan import (
    DEFAULT_PLAN_KIND,
    ChunkPlan,
    ChunkResult,
    check_plan_kind,
    chunk_columns,
    partition_plan,
)
from policyengine_us_data.shards.csr_stream import assemble_csr, assemble_csr_out_of_core, check_column_cover
from policyengine_us_data.datasets.geography import CloneGeography
from policyengine_us_data.shards.lineage import ChunkManifest, build_lineage, lineage_signature, source_hash
from policyengine_us_data.shards.shards import (
    MANIFEST_FILE,
    read_shard_header,
    remove_shards,
    shard_path,
    verify_shard,
)
from policyengine_us_data.errors import ArtifactError, InputError, LineageMismatch, ManifestError

LOG = logging.getLogger(__name__)
KERNEL_MODULES = (cell_rules, chunk_kernel, chunk_plan, constraints, entity_clone, simulator, spm_thresholds, takeup)


class ChunkBuildError(RuntimeError):
    """Some chunks still failed after their retries; finished shards are kept for a resume."""

    def __init__(self, failures: list) -> None:
        self.failures = failures
        ids = ", ".join(str(f.chunk_id) for f in failures)
        first = failures[0]
        super().__init__(
            f"{len(failures)} chunk(s) failed after retries: {ids}. First error (chunk {first.chunk_id}): "
            f"{first.error}. Finished chunks are kept; rerun to resume."
        )


@dataclass
class ResumePlan:
    """Which chunks must run, which are already good, and why each one runs."""

    todo: list[ChunkPlan]
    done: list[ChunkPlan]
    reasons: dict[int, str] = field(default_factory=dict)


def kernel_version() -> str:
    """Hash of the kernel's source: a code change invalidates existing shards."""
    return source_hash(*KERNEL_MODULES)


class ChunkedMatrixAssembler:
    """Coordinates one chunked build of the matrix described by a build-state directory."""

    def __init__(
        self,
        state_dir: str | os.PathLike,
        chunk_dir: str | os.PathLike,
        *,
        chunk_size: int = 25_000,
        chunk_plan: str = DEFAULT_PLAN_KIND,
        dispatcher=None,
        resume: bool = True,
        restart_other_lineage: bool = False,
        deep_verify: bool = True,
        progress: bool = True,
        on_result: Callable[[ChunkResult], None] | None = None,
    ) -> None:
        if int(chunk_size) <= 0:
            raise InputError(f"chunk size must be a positive integer, got {chunk_size}: pass --chunk-size N with N >= 1")
        self.state_dir = Path(state_dir)
        self.chunk_dir = Path(chunk_dir)
        self.chunk_size = int(chunk_size)
        self.chunk_plan = check_plan_kind(chunk_plan)
        self._state_fips: np.ndarray | None = None
        self.meta = read_state_meta(self.state_dir)
        self.dispatcher = dispatcher
        self.resume = resume
        self.restart_other_lineage = restart_other_lineage
        self._manifest: ChunkManifest | None = None
        self.deep_verify = deep_verify
        self.progress = progress
        self.on_result = on_result
        self.lineage = self._lineage()
        self.signature = lineage_signature(self.lineage)
        self.report = None

    @property
    def n_rows(self) -> int:
        return int(self.meta["n_rows"])

    @property
    def n_columns(self) -> int:
        return int(self.meta["n_columns"])

    @property
    def manifest_path(self) -> Path:
        return self.chunk_dir / MANIFEST_FILE

    def _lineage(self) -> dict:
        meta = self.meta
        return build_lineage(
            dataset_sha256=meta["dataset_sha256"],
            targets_fingerprint=meta["targets_fingerprint"],
            constraints_fingerprint=meta["constraints_fingerprint"],
            geography_sha256=meta["geography_sha256"],
            year=meta["year"],
            n_records=meta["n_records"],
            n_clones=meta["n_clones"],
            chunk_size=self.chunk_size,
            chunk_plan=self.chunk_plan,
            rerandomize_takeup=meta["rerandomize_takeup"],
            kernel_version=kernel_version(),
            extra={"simulator": meta["simulator"]},
        )

    @property
    def state_fips(self) -> np.ndarray:
        """Each column's state (read once from the state's geography): what the chunk plan follows."""
        if self._state_fips is None:
            geography = CloneGeography.load(self.state_dir / GEOGRAPHY_FILE)
            if geography.n_columns != self.n_columns:
                raise InputError(f"the build state's geography has {geography.n_columns} columns, its metadata "
                                 f"{self.n_columns}: rerun the `constraints` step")
            self._state_fips = geography.state_fips
        return self._state_fips

    def plans(self) -> list[ChunkPlan]:
        """The chunks of this build's plan kind, covering every column exactly once."""
        return [
            ChunkPlan(cid, start, end, str(shard_path(self.chunk_dir, cid)), self.signature, self.chunk_plan)
            for cid, start, end in partition_plan(self.chunk_plan, self.state_fips, self.chunk_size)
        ]

    def columns(self, chunk: ChunkPlan) -> np.ndarray:
        """The chunk's global columns, ascending."""
        return chunk_columns(chunk.kind, self.state_fips, chunk.col_start, chunk.col_end)

    def prove_cover(self) -> int:
        """Read every planned shard's column set and prove each column is covered exactly once.

        Returns the number of columns; raises ShardError naming a shard that repeats another's
        columns, or the columns no shard covers.
        """
        headers = [read_shard_header(chunk.shard_path) for chunk in self.plans()]
        check_column_cover(headers, self.n_columns, complete=True)
        return self.n_columns

    def open_manifest(self) -> ChunkManifest:
        """The manifest for this lineage, opened once per assembler. Without resume, or when another lineage's
        shards are here and `restart_other_lineage` says they are ours to drop, the shards go and a fresh
        manifest starts; on resume another lineage raises LineageMismatch naming the differing fields."""
        if self._manifest is None:
            self._manifest = self._open_manifest()
        return self._manifest

    def _open_manifest(self) -> ChunkManifest:
        self.chunk_dir.mkdir(parents=True, exist_ok=True)
        if self.manifest_path.exists():
            try:
                manifest = ChunkManifest.load(self.manifest_path)
            except ManifestError as exc:
                LOG.warning("chunk manifest unreadable (%s); shards will be verified one by one", exc)
                return ChunkManifest.create(self.manifest_path, self.lineage)
            if not self.resume:
                self.remove_shards()
                return ChunkManifest.create(self.manifest_path, self.lineage)
            try:
                manifest.check_lineage(self.lineage)
                return manifest
            except LineageMismatch as exc:
                if not self.restart_other_lineage:
                    raise
                LOG.info("starting the chunks afresh: %s", "; ".join(exc.differing))
                self.remove_shards()
        return ChunkManifest.create(self.manifest_path, self.lineage)

    def classify(self) -> ResumePlan:
        """Split the plans into chunks to (re)compute and chunks whose shards are good."""
        plan = ResumePlan(todo=[], done=[])
        for chunk in self.plans():
            reason = self._why_recompute(chunk) if self.resume else "resume disabled"
            if reason is None:
                plan.done.append(chunk)
            else:
                plan.todo.append(chunk)
                plan.reasons[chunk.chunk_id] = reason
        return plan

    def _why_recompute(self, chunk: ChunkPlan) -> str | None:
        if not Path(chunk.shard_path).exists():
            return "missing"
        try:
            verify_shard(
                chunk.shard_path,
                lineage_signature=self.signature,
                deep=self.deep_verify,
                expect_chunk=(chunk.chunk_id, chunk.col_start, chunk.col_end),
                expect_columns=self.columns(chunk),
            )
        except ArtifactError as exc:
            return exc.defect
        return None

    def dispatch(self) -> ResumePlan:
        """Run every chunk that is not already good; raise ChunkBuildError if any still fail."""
        manifest = self.open_manifest()
        resume_plan = self.classify()
        for chunk_id, reason in sorted(resume_plan.reasons.items()):
            if reason not in ("missing", "resume disabled"):
                LOG.warning("chunk %d will be recomputed: %s", chunk_id, reason)
        for chunk in resume_plan.done:  # a sound shard whose manifest entry a kill lost: record what it holds
            if chunk.chunk_id not in manifest.chunks:
                manifest.record_result(self._found(chunk))
        if resume_plan.todo:
            self._run(resume_plan, manifest)
        return resume_plan

    @staticmethod
    def _found(chunk: ChunkPlan) -> ChunkResult:
        """A verified shard's result, from its header (its timings were not recorded)."""
        header = read_shard_header(chunk.shard_path)
        return ChunkResult(chunk.chunk_id, chunk.col_start, chunk.col_end, header.nnz, 0, 0, 0.0, 0.0,
                           checksum=header.checksum)

    def _run(self, resume_plan: ResumePlan, manifest: ChunkManifest) -> None:
        from policyengine_us_data.dispatch import LocalChunkDispatcher
        from policyengine_us_data.dispatch.progress import ChunkProgress

        dispatcher = self.dispatcher or LocalChunkDispatcher(workers=1)
        total = len(resume_plan.todo) + len(resume_plan.done)
        columns = sum(chunk.n_columns for chunk in resume_plan.done)
        with ChunkProgress(total=total, done=len(resume_plan.done), enabled=self.progress,
                           columns_total=self.n_columns, columns_done=columns) as bar:

            def record(result: ChunkResult) -> None:
                manifest.record_result(result)
                bar.advance(result)
                if self.on_result:
                    self.on_result(result)

            self.report = dispatcher.dispatch(resume_plan.todo, str(self.state_dir), on_result=record)
        if self.report.failures:
            raise ChunkBuildError(self.report.failures)

    def check_lineage(self) -> None:
        """Every shard must carry this build's lineage: a shard another run wrote into the same directory (two
        coordinators on one run id) must never enter this matrix, even if it appeared after `verify`."""
        foreign = [chunk.chunk_id for chunk in self.plans()
                   if read_shard_header(chunk.shard_path).lineage_signature != self.signature]
        if foreign:
            raise ArtifactError(self.chunk_dir, f"chunk(s) {', '.join(map(str, foreign))} carry another build's "
                                f"lineage (another run on this chunk directory or run id?): rerun the build, "
                                "which recomputes them")

    def assemble(self, *, out_of_core: bool = False, out_dir: str | os.PathLike | None = None):
        """Stream every shard of this lineage into the final CSR (or into arrays on disk)."""
        self.check_lineage()
        paths = [chunk.shard_path for chunk in self.plans()]
        if out_of_core:
            target = Path(out_dir or self.chunk_dir / "csr")
            return assemble_csr_out_of_core(paths, self.n_rows, self.n_columns, target)
        return assemble_csr(paths, self.n_rows, self.n_columns)

    def build(self, *, out_of_core: bool = False):
        """Dispatch what is missing, then assemble."""
        start = time.perf_counter()
        self.dispatch()
        matrix = self.assemble(out_of_core=out_of_core)
        LOG.info("chunked build finished in %.1f s", time.perf_counter() - start)
        return matrix

    def remove_shards(self) -> None:
        """Delete this directory's shards and manifest (ours only; other files are left alone)."""
        remove_shards(self.chunk_dir)

    def outcomes(self, resume_plan: ResumePlan) -> list[ChunkResult]:
        """Every chunk of the build, one `ChunkResult` each in chunk order: those computed now as the dispatcher
        reported them, the others (kept from an earlier run) as the manifest recorded them, marked `reused`."""
        computed = {r.chunk_id: r for r in (self.report.results if self.report else [])}
        recorded = self.open_manifest().chunks
        results = []
        for chunk in sorted(resume_plan.todo + resume_plan.done, key=lambda c: c.chunk_id):
            if chunk.chunk_id in computed:
                results.append(computed[chunk.chunk_id])
                continue
            # a shard a restarted Modal worker found already built has no manifest entry yet
            record = recorded.get(chunk.chunk_id) or self._found(chunk)
            results.append(replace(record, reused=True))
        return results
