"""Run chunks on this machine: in-process, or in a pool forked after policyengine-us is loaded.

Importing policyengine-us costs 35-45 s and ~0.8 GB per process, and the first simulation another
25-35 s. So the parent imports and warms up once, freezes its heap (`gc.freeze()`, so the collector
does not dirty shared pages), then forks the pool: every worker starts warm and shares the loaded
system copy-on-write, and each runs many chunks. Forked workers leave through `os._exit` (that is
how multiprocessing ends a forked child), skipping the slow interpreter teardown.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Sequence

from policyengine_us_data.dispatch.base import (
    DEFAULT_MAX_RETRIES,
    ChunkDispatcher,
    DispatchReport,
    Kernel,
    ResultCallback,
    RetryBook,
    check_unique,
    default_kernel,
    default_warm_up,
    remove_partial_shards,
    run_outcome,
)
from policyengine_us_data.dispatch.deferred_signals import DeferredSignals
from policyengine_us_data.shards.chunk_plan import ChunkPlan
from policyengine_us_data.errors import InputError
from policyengine_us_data.utils import progress_events

LOG = logging.getLogger(__name__)
_WORKER_KERNEL: Kernel | None = None
KILL_GRACE_SECONDS = 5.0
SIGNAL_POLL_SECONDS = 0.25  # how soon a held Ctrl-C or SIGTERM is acted on


def _init_worker(kernel: Kernel, parent: int | None = None) -> None:
    """Pool initializer: the parent alone decides when to stop, so workers ignore Ctrl-C, and die with it.

    A forked worker inherits the parent's Python signal handlers; a SIGTERM handler that raises (a runner
    step's, say) would print a traceback from every worker the pool terminates. SIGTERM just ends a worker.
    """
    global _WORKER_KERNEL
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if parent is not None:
        _die_with_parent(parent)
    _WORKER_KERNEL = kernel


def _die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this worker when the dispatching process dies, even by SIGKILL. An orphan would hang on
    the pool's queue forever, holding the run directory's lock (a forked child shares the flock)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: no such call
        return
    if os.getppid() != parent:  # the parent died before the call above
        os._exit(1)


def _pool_task(plan: ChunkPlan, state_dir: str) -> dict[str, Any]:
    """One chunk in a pool worker; the kernel came through the fork, not through pickle."""
    assert _WORKER_KERNEL is not None, "pool worker started without its initializer"
    return run_outcome(_WORKER_KERNEL, plan, state_dir)


class LocalChunkDispatcher(ChunkDispatcher):
    """Serial in this process when `workers == 1`; a forked process pool when `workers > 1`.

    `kernel` defaults to the real `chunk_kernel.run_chunk`. `warm_up`: True runs the kernel module's
    warm-up in the parent before forking (only with the default kernel, so fakes never import
    policyengine-us); a callable is called with `state_dir` instead; False skips it.
    """

    def __init__(
        self,
        workers: int = 1,
        max_retries: int = DEFAULT_MAX_RETRIES,
        kernel: Kernel | None = None,
        warm_up: bool | Callable[[str], None] = True,
    ) -> None:
        if not isinstance(workers, int) or workers < 1:
            raise InputError(f"--workers must be a positive integer, got {workers!r}")
        if max_retries < 0:
            raise InputError(f"max_retries must be >= 0, got {max_retries}")
        self.workers = workers
        self.max_retries = max_retries
        self.kernel = kernel
        self.warm_up = warm_up
        self.warm_up_seconds: float | None = None  # measured by the last dispatch, when it warmed up

    def dispatch(
        self,
        plans: Sequence[ChunkPlan],
        state_dir: str,
        on_result: ResultCallback | None = None,
    ) -> DispatchReport:
        """Run every plan; on Ctrl-C stop the workers, drop partial shard files, and re-raise."""
        check_unique(plans)
        started = time.perf_counter()
        report = DispatchReport()
        book = RetryBook(report, self.max_retries, on_result)
        kernel = self.kernel or default_kernel()
        try:
            if self.workers == 1 or len(plans) <= 1:
                self._run_serial(kernel, list(plans), str(state_dir), book)
            else:
                self._run_pool(kernel, list(plans), str(state_dir), book)
        except BaseException:
            remove_partial_shards(plans)
            raise
        return report.finish(started)

    def _run_serial(self, kernel: Kernel, plans: list[ChunkPlan], state_dir: str, book: RetryBook) -> None:
        self._warm(state_dir)
        queue = deque(plans)
        while queue:
            plan = queue.popleft()
            book.start(plan.chunk_id)
            if book.record(run_outcome(kernel, plan, state_dir)):
                queue.append(plan)

    def _warm(self, state_dir: str) -> None:
        """The warm-up as its own phase, announced and timed: load the simulator and run one small simulation
        (in the parent before forking, so every worker starts warm; serially, so the first chunk's time is
        its own)."""
        started = time.perf_counter()
        if self.warm_up is True and self.kernel is None:
            progress_events.phase("warm-up", "start", f"warming up {_simulator_name(state_dir)}: loading it and "
                                  "running one small simulation (once per build; for policyengine-us about 15 s, "
                                  "plus about 40 s if it is not loaded yet)")
            default_warm_up()(state_dir)
        elif callable(self.warm_up):
            progress_events.phase("warm-up", "start", "warming up the simulator")
            self.warm_up(state_dir)
        else:
            return
        self.warm_up_seconds = round(time.perf_counter() - started, 3)
        progress_events.phase("warm-up", "done", f"warm-up: done in {self.warm_up_seconds:.0f} s; "
                              f"running chunks on {self.workers} worker(s)", seconds=self.warm_up_seconds)

    def _prepare_parent(self, state_dir: str) -> None:
        """Warm up here, so every forked worker starts warm, and freeze the heap they share."""
        self._warm(state_dir)
        gc.collect()
        gc.freeze()

    def _new_executor(self, kernel: Kernel, n_plans: int) -> ProcessPoolExecutor:
        if sys.platform == "win32":
            raise InputError("the local process pool needs the fork start method (Linux/macOS): use --workers 1")
        return ProcessPoolExecutor(
            max_workers=min(self.workers, n_plans),
            mp_context=multiprocessing.get_context("fork"),
            initializer=_init_worker,
            initargs=(kernel, os.getpid()),
        )

    def _run_pool(self, kernel: Kernel, plans: list[ChunkPlan], state_dir: str, book: RetryBook) -> None:
        self._prepare_parent(state_dir)
        try:
            self._pool_loop(kernel, plans, state_dir, book)
        finally:
            gc.unfreeze()

    def _pool_loop(self, kernel: Kernel, plans: list[ChunkPlan], state_dir: str, book: RetryBook) -> None:
        """Submit every plan; book outcomes as they finish; resubmit retries; replace a broken pool.

        Ctrl-C and SIGTERM are held while the pool's locks may be taken, and acted on between waits.
        """
        with DeferredSignals() as signals:
            pool = _Pool(lambda: self._new_executor(kernel, len(plans)), state_dir, book)
            try:
                for plan in plans:
                    pool.submit(plan)
                while pool.pending:
                    signals.deliver()
                    for plan in pool.collect(SIGNAL_POLL_SECONDS):
                        pool.submit(plan)
            except BaseException:
                _stop_now(pool.executor)
                raise
            finally:
                pool.executor.shutdown(wait=True)


def _simulator_name(state_dir: str) -> str:
    """What the warm-up loads, in the words a user knows (policyengine-us, or a test's stand-in)."""
    from policyengine_us_data.kernel.build_state import read_state_meta

    name = str(read_state_meta(state_dir).get("simulator", "policyengine"))
    return "policyengine-us" if name == "policyengine" else name


class _Pool:
    """A process pool with its futures; replaced by a fresh one when a worker dies under it."""

    def __init__(self, new_executor: Callable[[], ProcessPoolExecutor], state_dir: str, book: RetryBook) -> None:
        self.new_executor = new_executor
        self.executor = new_executor()
        self.generation = 0
        self.state_dir = state_dir
        self.book = book
        self.pending: dict[Future, tuple[ChunkPlan, int]] = {}

    def submit(self, plan: ChunkPlan) -> None:
        self.book.start(plan.chunk_id)
        self.pending[self.executor.submit(_pool_task, plan, self.state_dir)] = (plan, self.generation)

    def collect(self, timeout: float) -> list[ChunkPlan]:
        """Book the chunks that finished within `timeout`; return those to retry."""
        done, _ = wait(list(self.pending), timeout=timeout, return_when=FIRST_COMPLETED)
        retry: list[ChunkPlan] = []
        for future in done:
            plan, born = self.pending.pop(future)
            outcome, broken = _outcome_of(future, plan)
            if broken and born == self.generation:  # first sign of this pool's death: start a new one
                self.executor.shutdown(wait=False)
                self.generation += 1
                self.executor = self.new_executor()
            if self.book.record(outcome):
                retry.append(plan)
        return retry


def _outcome_of(future: Future, plan: ChunkPlan) -> tuple[dict[str, Any], bool]:
    """The worker's outcome, or a failure outcome when the worker process died under it."""
    try:
        return future.result(), False
    except BrokenProcessPool as exc:
        now = time.time()
        error = f"worker process died while running the chunk ({exc}); out of memory?"
        return {"chunk_id": plan.chunk_id, "ok": False, "error": error, "traceback": "", "start": now, "end": now}, True


def _stop_now(executor: ProcessPoolExecutor) -> None:
    """End the workers at once; the pool then fails every queued chunk and shuts down.

    Futures are not cancelled first: on 3.11 the pool's manager thread would then try to fail a
    cancelled future and die with InvalidStateError. A killed writer leaves only a temp file.
    """
    processes = list((getattr(executor, "_processes", None) or {}).values())
    for process in processes:
        with contextlib.suppress(Exception):
            process.terminate()
    deadline = time.monotonic() + KILL_GRACE_SECONDS
    for process in processes:
        with contextlib.suppress(Exception):
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(1.0)
    executor.shutdown(wait=False)
