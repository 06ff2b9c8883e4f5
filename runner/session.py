"""One locked run: clean, reset-to, plan, reset the directory, run each step, checkpoint, journal.

Created by ``CommandRunner`` while it holds the run-directory lock; nothing here takes or checks the lock.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import cli
from .checkpoints import BASE_LABEL, RUNNER_DIR, CheckpointStore, Manifest, remove_path
from .command import BuildState, CommandError
from .execution import EXIT_INTERRUPTED, Outcome, run_step
from .fsutil import human_bytes
from .inputs import CACHE_NAME as INPUT_CACHE
from .inputs import InputDigests
from .journal import Journal
from .planning import Plan, StepStatus, fingerprint, make_plan, step_parts

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .runner import CommandRunner

MARKER = "made-by-runner"
ADOPT = "adopt-pending"


@dataclass(frozen=True)
class RunResult:
    """What ``run`` did: exit code, a message for the user (errors), steps run and skipped, final state."""

    exit_code: int
    message: str = ""
    ran: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    state: BuildState | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def files_written(before: Manifest | None, after: Manifest) -> tuple[int, int]:
    """Files (and their bytes) in ``after`` that are new or different from ``before``."""
    count = size = 0
    for rel, entry in after.files.items():
        old = before.files.get(rel) if before else None
        same = old is not None and (old["size"], old["mtime_ns"]) == (entry["size"], entry["mtime_ns"])
        if same and old["mode"] == entry["mode"] == "link":
            same = old["inode"] == entry["inode"]
        if not same:
            count += 1
            size += entry["size"]
    return count, size


class Session:
    """The work of one ``run`` under the lock."""

    def __init__(self, runner: CommandRunner, ns: argparse.Namespace) -> None:
        self.runner = runner
        self.ns = ns
        self.run_dir = runner.run_dir
        self.hidden = self.run_dir / RUNNER_DIR
        self.store = CheckpointStore(self.run_dir)
        self.journal = self._open_journal()
        self.inputs = InputDigests(self.hidden / INPUT_CACHE)
        self.steps = runner.steps
        self.labels = [s.label for s in self.steps]
        self.ran: list[str] = []
        self.open_record: dict[str, Any] | None = None

    def _open_journal(self) -> Journal:
        journal = Journal(self.hidden / "journal.json")
        if journal.warning:
            print(f"warning: {journal.warning}", file=sys.stderr)
        return journal

    def _print(self, text: str) -> None:
        self.runner._print(text)  # noqa: SLF001 - the runner owns the output stream

    # ------------------------------------------------------------------ top level
    def execute(self, target: int) -> RunResult:
        """Do what the flags ask, in order: --clean, --reset-to, then run up to ``target``."""
        self.store.sweep()
        self._adopt()
        if self.ns.clean:
            self._clean()
            if not self.ns.to:
                return RunResult(0, f"cleaned {self.run_dir}")
        if self.ns.reset_to:
            self._reset_to(self.ns.reset_to)
            if not self.ns.to:
                return RunResult(0, state=self._state_after(self.labels.index(self.ns.reset_to)))
        plan = make_plan(self.steps, self.ns, self.store, self.journal, target, self.ns.force, refresh=True,
                         inputs=self.inputs)
        try:
            return self._run_plan(plan)
        except KeyboardInterrupt:
            if self.open_record is not None:
                self.journal.finish(self.open_record, "interrupted", error="interrupted (Ctrl-C) outside the step")
            return RunResult(EXIT_INTERRUPTED, "interrupted; no checkpoint was taken", tuple(self.ran))

    def _state_after(self, index: int) -> BuildState:
        completed = tuple(self.labels[: index + 1])
        return BuildState(self.run_dir, completed, completed[-1] if completed else None, False, "")

    def _adopt(self) -> None:
        """An existing, non-empty directory keeps its original contents as the base of the first step."""
        flag = self.hidden / ADOPT
        if flag.exists():
            self.store.snapshot(BASE_LABEL, {"note": "contents of the directory before the runner adopted it"})
            flag.unlink()

    def _clean(self) -> None:
        if not (self.hidden / MARKER).is_file():
            raise cli.UsageError(f"refusing to --clean {self.run_dir}: the runner did not create it "
                                 f"(no {RUNNER_DIR}/{MARKER}); remove its contents yourself if you mean to")
        for child in self.run_dir.iterdir():
            if child.name != RUNNER_DIR:
                remove_path(child)
        for child in self.hidden.iterdir():
            if child.name not in ("lock", MARKER):
                remove_path(child)
        (self.hidden / "logs").mkdir()
        (self.hidden / "checkpoints").mkdir()
        self.store = CheckpointStore(self.run_dir)
        self.journal = Journal(self.hidden / "journal.json")
        self._print(f"cleaned {self.run_dir}")

    def _reset_to(self, label: str) -> None:
        """Restore ``label``'s checkpoint and forget the steps after it."""
        manifest = self.store.load(label)
        if manifest is None:
            last = self.journal.last(label)
            why = f"its last attempt {last['status']}" if last else "it never ran"
            raise cli.UsageError(f"--reset-to {label}: there is no checkpoint of {label} ({why})")
        stats = self.store.restore(manifest)
        self._forget(self.labels.index(label) + 1, f"forgotten by --reset-to {label}")
        self.journal.note(label, "reset", f"directory reset to the checkpoint of {label}")
        self._print(f"reset {self.run_dir} to the checkpoint of {label} "
                    f"({stats.removed} removed, {stats.restored} restored, {stats.kept} kept)")

    def _forget(self, start: int, reason: str, keep_quiet: str | None = None) -> None:
        """Drop the checkpoints of steps ``start`` and later (they no longer follow from the directory);
        journal why, except for ``keep_quiet`` (the step about to run, whose attempt record says enough)."""
        existing = set(self.store.labels())
        for step in self.steps[start:]:
            if step.label in existing:
                self.store.delete(step.label)
                if step.label != keep_quiet:
                    self.journal.note(step.label, "forgotten", reason)

    # ------------------------------------------------------------------ running
    def _run_plan(self, plan: Plan) -> RunResult:
        skipped = tuple(s.label for s in plan.skipped)
        if not plan.to_run:
            self.inputs.save()
            self._print(f"nothing to run: every step up to {self.labels[plan.target]} is up to date")
            return RunResult(0, ran=(), skipped=skipped, state=self._state_after(plan.target))
        refused = self._validate(plan, skipped)
        if refused is not None:
            return refused  # bad input leaves the directory as it was, digest cache included
        self.inputs.save()
        dirty = self._prepare(plan)
        previous = plan.base
        for count, status in enumerate(plan.to_run, 1):
            self._print(f"[{count}/{len(plan.to_run)}] {status.label}: running ({status.reason})")
            outcome, manifest = self._run_one(status, dirty, previous)
            if outcome.status != "done":
                return RunResult(outcome.exit_code, self._failure_message(status.label, outcome),
                                 tuple(self.ran), skipped)
            previous, dirty = manifest, False
        return RunResult(0, ran=tuple(self.ran), skipped=skipped, state=self._state_after(plan.target))

    def _validate(self, plan: Plan, skipped: tuple[str, ...]) -> RunResult | None:
        """Every step about to run checks its input first: bad input ends the run before anything is touched."""
        for status in plan.to_run:
            try:
                status.step.cls.validate(self.ns)
            except CommandError as exc:
                return RunResult(exc.exit_code, f"step {status.label}: {exc}", skipped=skipped)
        return None

    def _prepare(self, plan: Plan) -> bool:
        """Reset the directory to the base checkpoint unless resuming or --allow-dirty; returns ``dirty``."""
        first = plan.to_run[0]
        if first.resume:
            self._print(f"resuming {first.label} on its partial outputs (resumable step, last attempt unfinished)")
            return True
        if first.repair:
            own = set(first.manifest.files) - set(plan.base.files if plan.base else ())
            self._print(f"repairing {first.label} on its own outputs (resumable step; they were modified)")
            self.store.restore(plan.base, keep=own)
            return True
        if self.ns.allow_dirty:
            return bool(self.store.diff(plan.base))
        self.store.restore(plan.base)
        return False

    def _upstream(self, index: int) -> list[list[str]]:
        ids = []
        for step in self.steps[:index]:
            manifest = self.store.load(step.label)
            ids.append([step.label, manifest.id if manifest else ""])
        return ids

    def _run_one(self, status: StepStatus, dirty: bool,
                 previous: Manifest | None) -> tuple[Outcome, Manifest | None]:
        """One attempt: forget later checkpoints, journal, run, verify, checkpoint."""
        step, index = status.step, status.index
        parts = step_parts(step, self.ns, self._upstream(index), self.inputs)
        self._forget(index, f"an earlier step re-ran: {step.label}", keep_quiet=step.label)
        self.open_record = record = self.journal.start(step.label, fingerprint(parts), parts, status.reason)
        state = BuildState(self.run_dir, tuple(self.labels[:index]), self.labels[index - 1] if index else None,
                           dirty, status.reason)
        log_path = self.runner.log_path(step.label)
        outcome = run_step(lambda: step.cls(self.ns, self.runner), state, log_path, step.label)
        manifest = None
        if outcome.status == "done":
            outcome, manifest = self._checkpoint(step.label, index, parts, outcome)
        if manifest is None:
            self.journal.finish(record, outcome.status, error=outcome.error, peak_rss_bytes=outcome.peak_rss_bytes)
            self.open_record = None
            return outcome, None
        count, size = files_written(previous, manifest)
        self.journal.finish(record, "done", checkpoint=manifest.id, files_written=count, bytes_written=size,
                            peak_rss_bytes=outcome.peak_rss_bytes)
        self.open_record = None
        self.ran.append(step.label)
        self._print(f"      {step.label}: done in {record['duration_s']:.1f}s "
                    f"({count} files, {human_bytes(size)} written; checkpoint taken)")
        return outcome, manifest

    def _checkpoint(self, label: str, index: int, parts: dict[str, Any],
                    outcome: Outcome) -> tuple[Outcome, Manifest | None]:
        """Refuse to checkpoint over damaged earlier checkpoints; else snapshot the directory."""
        problems = self._damaged_before(index)
        if problems:
            error = ("the step modified checkpointed files in place (write to a temp file and os.replace "
                     "instead): " + "; ".join(problems[:3]))
            return Outcome("failed", 1, error, outcome.peak_rss_bytes), None
        try:
            manifest = self.store.snapshot(label, {"fingerprint": fingerprint(parts), "parts": parts})
        except OSError as exc:
            return Outcome("failed", 1, f"checkpoint failed: {exc}", outcome.peak_rss_bytes), None
        return outcome, manifest

    def _damaged_before(self, index: int) -> list[str]:
        problems = []
        for label in [BASE_LABEL] + self.labels[:index]:
            manifest = self.store.load(label)
            if manifest is not None:
                problems += [f"{label}: {p}" for p in self.store.verify(manifest, refresh=True)]
        return problems

    def _failure_message(self, label: str, outcome: Outcome) -> str:
        if outcome.status == "interrupted":
            return (f"step {label} {outcome.error}; no checkpoint taken, the journal says interrupted, "
                    f"the next run resets or resumes it")
        log = self.runner.log_path(label)
        return f"step {label} failed: {outcome.error} (log: {log})"
