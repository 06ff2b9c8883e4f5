"""`unified_calibration --plan`: the production plan from measured inputs, contiguous against state-major chunks.

The inputs come from a measurement manifest (`benchmarks/bench_chunk_plans.py --manifest FILE`, which times the
import, the warm-up, chunks of both plan kinds and the assembly in one process) or from a finished build's chunk
directory (its chunk times, and its peak memory when `bin/build-matrix` left `dispatch.json`; a chunk directory
does not record the import, the warm-up or the assembly, and the plan says so). The production shape is explicit
(households x clones at the chunk size); each kind's chunk count comes from its partition of a production-shaped
geography, and only chunks measured at that chunk size are used: nothing is scaled or guessed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from policyengine_us_data.dispatch.plan import (
    ChunkTimes,
    PlanInputs,
    ProductionPlan,
    Shape,
    format_plans,
    plan_production,
)
from policyengine_us_data.dispatch.dispatch_estimate import planned_chunks
from policyengine_us_data.shards.chunk_plan import CONTIGUOUS
from policyengine_us_data.compat.upstream_chunk_cache import COO_DIR
from policyengine_us_data.errors import InputError
from policyengine_us_data.dispatch.modal_names import MAX_CONTAINERS, WORKER_MEMORY_MB, WORKER_RETRIES

MANIFEST_FORMAT = "production-plan-measurements/1"
PRODUCTION_HOUSEHOLDS = 12_000  # upstream's stratified sample of the enhanced CPS


def _optional(obj: dict[str, Any], key: str) -> float | None:
    value = obj.get(key)
    return None if value is None else float(value)


def _manifest_inputs(manifest: dict[str, Any], chunk_size: int, cold_start_s: float | None) -> dict[str, PlanInputs]:
    assembly = manifest.get("assembly") or {}
    per_nnz = float(assembly["seconds"]) / int(assembly["nnz"]) if assembly.get("nnz") else None
    out = {}
    for kind, by_size in manifest.get("plans", {}).items():
        rows = by_size.get(str(chunk_size))
        if not rows:
            continue
        chunk = ChunkTimes(tuple(float(r["seconds"]) for r in rows), max(r["peak_rss_mb"] for r in rows) / 1024,
                           sum(int(r["columns"]) for r in rows))
        out[kind] = PlanInputs(chunk, _optional(manifest, "import_s"), _optional(manifest, "warm_up_s"), cold_start_s,
                               per_nnz, _optional(manifest, "nnz_per_column"))
    return out


def inputs_from_manifest(path: Path, chunk_size: int, cold_start_s: float | None) -> tuple[dict[str, PlanInputs], str]:
    """Each measured plan kind's inputs at `chunk_size`, and a line naming the source."""
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the measurement manifest {path}: {exc}; write one with "
                         "benchmarks/bench_chunk_plans.py --manifest FILE") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise InputError(f"{path} is not a measurement manifest ({MANIFEST_FORMAT}): write one with "
                         "benchmarks/bench_chunk_plans.py --manifest FILE")
    try:
        out = _manifest_inputs(manifest, chunk_size, cold_start_s)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"malformed measurement manifest {path} ({type(exc).__name__}: {exc}): write it again with "
                         "benchmarks/bench_chunk_plans.py --manifest FILE") from exc
    if not out:
        sizes = sorted({s for by_size in manifest.get("plans", {}).values() for s in by_size}, key=int)
        raise InputError(f"{path} has no chunks measured at {chunk_size:,} columns (it has {', '.join(sizes) or 'none'}): "
                         f"pass --chunk-size with one of those, or measure with bench_chunk_plans.py --sizes {chunk_size}")
    load = (manifest.get("host", {}).get("load_average_start") or ["?"])[0]
    load = f"{load:.2f}" if isinstance(load, (int, float)) else load
    source = (f"{path} ({manifest.get('created', '?')}, {manifest.get('sample', {}).get('households', '?')} households x "
              f"{manifest.get('sample', {}).get('clones', '?')} clones, load average {load}, "
              f"policyengine-us {manifest.get('policyengine_us', '?')})")
    return out, source


def inputs_from_chunk_dir(chunks: Path, chunk_size: int, cold_start_s: float | None) -> tuple[dict[str, PlanInputs], str]:
    """The run's own plan kind, from its manifest's chunk times and peaks and, if present, `dispatch.json`'s
    warm-up (a run records no import or assembly time: the plan names them as not measured)."""
    from policyengine_us_data.shards.lineage import ChunkManifest

    manifest = ChunkManifest.load(chunks / "chunk_manifest.json")
    records = list(manifest.chunks.values())
    if not records:
        raise InputError(f"no finished chunks recorded in {chunks}: build some first")
    measured_size = int(manifest.lineage.get("chunk_size", 0))
    if measured_size != chunk_size:
        raise InputError(f"the chunks in {chunks} were built at {measured_size:,} columns, not {chunk_size:,}: "
                         f"pass --chunk-size {measured_size}, or measure with bench_chunk_plans.py --sizes {chunk_size}")
    kind = str(manifest.lineage.get("chunk_plan", CONTIGUOUS))
    columns = sum(r.col_end - r.col_start for r in records)
    peak_gb = max(r.peak_rss_mb for r in records) / 1024 or None
    chunk = ChunkTimes(tuple(r.seconds for r in records), peak_gb, columns)
    inputs = PlanInputs(chunk, None, _warm_up_seconds(chunks), cold_start_s, None, sum(r.nnz for r in records) / columns)
    return {kind: inputs}, f"{chunks} ({len(records)} chunks of the {kind} plan)"


def manifest_dir(chunk_dir: Path) -> Path:
    """The directory holding a build's `chunk_manifest.json` (`X/coo/` for a local build, `X` on Modal)."""
    return chunk_dir / COO_DIR if (chunk_dir / COO_DIR / "chunk_manifest.json").exists() else chunk_dir


def _warm_up_seconds(chunks: Path) -> float | None:
    """The warm-up the local pool measured (`dispatch.json`, which `bin/build-matrix` writes); None if absent."""
    summary = chunks / "dispatch.json"
    if not summary.exists():
        return None
    value = json.loads(summary.read_text()).get("warm_up_seconds")
    return float(value) if isinstance(value, (int, float)) and value > 0 else None

def build_plans(inputs: dict[str, PlanInputs], households: int, clones: int, chunk_size: int,
                workers: int) -> dict[str, ProductionPlan]:
    """One plan per measured kind (contiguous first) for households x clones in `chunk_size` chunks."""
    plans = {}
    for kind in sorted(inputs, key=lambda k: k != CONTIGUOUS):
        n_chunks, n_columns = planned_chunks(households, clones, 0, kind, chunk_size)
        shape = Shape(n_columns=n_columns, n_chunks=n_chunks, workers=workers, max_containers=MAX_CONTAINERS,
                      retries=WORKER_RETRIES, worker_memory_gb=WORKER_MEMORY_MB / 1024)
        plans[kind] = plan_production(inputs[kind], shape)
    return plans


def print_plan(args: argparse.Namespace) -> int:
    """`--plan`: print the production plan from `--measured FILE` or `--chunk-dir DIR`."""
    if args.plan_households < 1 or args.n_clones < 1 or args.chunk_size < 1 or args.num_matrix_workers < 1:
        raise InputError("--plan-households, --n-clones, --chunk-size and --num-matrix-workers must be >= 1")
    if args.measured:
        inputs, source = inputs_from_manifest(Path(args.measured), args.chunk_size, args.cold_start_seconds)
    elif args.chunk_dir:
        inputs, source = inputs_from_chunk_dir(manifest_dir(Path(args.chunk_dir)), args.chunk_size,
                                               args.cold_start_seconds)
    else:
        raise InputError("--plan needs --measured FILE (from benchmarks/bench_chunk_plans.py --manifest FILE) or "
                         "--chunk-dir pointing at a build's chunks (run one with --keep-chunks)")
    plans = build_plans(inputs, args.plan_households, args.n_clones, args.chunk_size, args.num_matrix_workers)
    first = next(iter(plans.values())).inputs
    print(f"Production plan: {args.plan_households:,} households x {args.n_clones} clones = "
          f"{args.plan_households * args.n_clones:,} columns in {args.chunk_size:,}-column chunks; "
          f"{args.num_matrix_workers} workers (Modal: at most {MAX_CONTAINERS} containers, {WORKER_RETRIES} retries, "
          f"{WORKER_MEMORY_MB // 1024} GB each)")
    print(f"measured: {source}")
    print(f"  per container: cold start {_seconds(first.cold_start_s)}, policyengine-us import {_seconds(first.import_s)},"
          f" first-simulation warm-up {_seconds(first.warm_up_s)}")
    per_nnz = first.assembly_s_per_nnz
    print(f"  assembly: {'NOT MEASURED' if per_nnz is None else f'{per_nnz * 1e6:.3f} s per million non-zeros'}"
          f" (streaming), {first.nnz_per_column or 0:.1f} non-zeros per column")
    print(format_plans(plans))
    return 0


def _seconds(value: float | None) -> str:
    return "NOT MEASURED" if value is None else f"{value:.1f} s"
