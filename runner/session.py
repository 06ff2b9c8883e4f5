"""One locked run: recover, clean, reset-to, plan, reset the directory, run each step, checkpoint, journal.

Created by ``CommandRunner`` while it holds the run-directory lock; nothing here takes or checks the lock.
Only files the runner wrote are ever removed or replaced (ownership.py); checkpoints of later steps are kept
until the steps that replace them succeed, so a failed rerun leaves the previous build restorable.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Any, Sequence

from . import cli
from .checkpoints import (RUNNER_DIR, CheckpointError, CheckpointStore, Manifest, RestoreStats, damaged_message,
                          scan)
from .command import BuildState, CommandError
from .execution import EXIT_INTERRUPTED, Outcome, run_step
from .fsutil import atomic_write_json, human_bytes, printable
from .inputs import CACHE_NAME as INPUT_CACHE
from .inputs import InputDigests
from .journal import Journal
from .ownership import ATTEMPT, RESET, Ownership, read_state_json, stat_keys, written
from .params import MEMORY_NAME, ParamMemory
from .protocols import RunnerView
from .planning import Plan, StepStatus, compare_parts, fingerprint, make_plan, step_parts



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


class Session:
    """The work of one ``run`` under the lock."""

    def __init__(self, runner: RunnerView, ns: argparse.Namespace) -> None:
        self.runner = runner
        self.ns = ns
        self.run_dir = runner.run_dir
        self.hidden = self.run_dir / RUNNER_DIR
        self.store = CheckpointStore(self.run_dir)
        self.owned = Ownership(self.run_dir, self.store)
        self.journal = self._open_journal()
        self.inputs = InputDigests(self.hidden / INPUT_CACHE)
        self.memory = ParamMemory(self.hidden / MEMORY_NAME)
        self.steps = runner.steps
        self.labels = [s.label for s in self.steps]
        self.ran: list[str] = []
        self.open_record: dict[str, Any] | None = None

    def _open_journal(self) -> Journal:
        journal = Journal(self.hidden / "journal.json")
        if journal.warning:
            print(f"warning: {printable(journal.warning)}", file=sys.stderr)
        return journal

    def _print(self, text: str) -> None:
        self.runner._print(text)  # noqa: SLF001 - the runner owns the output stream

    # ------------------------------------------------------------------ top level
    def execute(self, target: int) -> RunResult:
        """Do what the flags ask, in order: finish interrupted work, --clean, --reset-to, then run."""
        try:
            self.store.sweep()
            self._recover()
            if self.ns.clean:
                self._clean()
                if not self.ns.to:
                    return RunResult(0, f"cleaned {printable(str(self.run_dir))}")
            if self.ns.reset_to:
                self._reset_to(self.ns.reset_to)
                if not self.ns.to:
                    return RunResult(0, state=self._state_after(self.labels.index(self.ns.reset_to)))
            plan = make_plan(self.steps, self.ns, self.store, self.journal, target, self.ns.force, refresh=True,
                             inputs=self.inputs)
            return self._run_plan(plan)
        except KeyboardInterrupt:
            if self.open_record is not None:
                self.journal.finish(self.open_record, "interrupted", error="interrupted (Ctrl-C) outside the step")
            return RunResult(EXIT_INTERRUPTED, "interrupted (Ctrl-C); the next run finishes or redoes what was "
                             "under way", tuple(self.ran))

    def _state_after(self, index: int) -> BuildState:
        completed = tuple(self.labels[: index + 1])
        return BuildState(self.run_dir, completed, completed[-1] if completed else None, False, "")

    # ------------------------------------------------------------------ crash recovery
    def _recover(self) -> None:
        """Claim what a killed step wrote; finish a reset that was interrupted. Before anything else."""
        attempt = read_state_json(self.hidden / ATTEMPT)
        if isinstance(attempt, dict) and isinstance(attempt.get("before"), dict):
            outputs = tuple(o for o in attempt.get("outputs", ()) if isinstance(o, str))
            self.owned.claim(scan(self.run_dir), written(attempt["before"], scan(self.run_dir), outputs))
            self.owned.save()
        (self.hidden / ATTEMPT).unlink(missing_ok=True)
        intent = read_state_json(self.hidden / RESET)
        if isinstance(intent, dict):
            label = intent.get("label")
            self._print(f"finishing a reset that was interrupted (to the checkpoint of {label or '(empty)'})")
            manifest = self.store.load(label) if isinstance(label, str) else None
            keep = [k for k in intent.get("keep", []) if isinstance(k, str)]
            forget = intent.get("forget_from")
            self._restore(manifest, keep, forget if isinstance(forget, int) else None)
        (self.hidden / RESET).unlink(missing_ok=True)

    def _restore(self, manifest: Manifest | None, keep: Sequence[str] = (),
                 forget_from: int | None = None) -> RestoreStats:
        """Restore the runner's files to ``manifest`` under a reset intent (finished at the next start if this
        process dies), then drop the checkpoints from ``forget_from`` on. A damaged checkpoint is refused
        before the intent is written, so a refused reset changes nothing."""
        problems = self.store.verify(manifest) if manifest is not None else []
        if problems:
            raise CheckpointError(damaged_message(manifest.label, problems))
        atomic_write_json(self.hidden / RESET, {"label": manifest.label if manifest else None, "keep": list(keep),
                                                "forget_from": forget_from})
        stats = self.store.restore(manifest, self.owned.owns, self.owned.move_aside, keep, self.owned.dirs())
        tree = scan(self.run_dir)
        self.owned.claim(tree, set(manifest.files) if manifest else set())
        self.owned.forget_missing()
        self.owned.save()
        for path in stats.moved:
            self._print(f"moved a file the runner did not write out of the way: {printable(path)}")
        if forget_from is not None:
            for step in self.steps[forget_from:]:
                if step.label in self.store.labels():
                    self.store.delete(step.label)
                    self.journal.note(step.label, "forgotten", f"forgotten by --reset-to {self.labels[forget_from - 1]}")
        (self.hidden / RESET).unlink(missing_ok=True)
        return stats

    # ------------------------------------------------------------------ clean, reset-to
    def _clean(self) -> None:
        """Remove the runner's files and history; whatever the runner did not write stays."""
        self._restore(None)
        for label in self.store.labels():
            self.store.delete(label)
        self.memory.clear()
        for name in ("journal.json", INPUT_CACHE, "owned.json"):
            (self.hidden / name).unlink(missing_ok=True)
        for log in (self.hidden / "logs").glob("*.log"):
            log.unlink()
        self.store = CheckpointStore(self.run_dir)
        self.owned = Ownership(self.run_dir, self.store)
        self.journal = Journal(self.hidden / "journal.json")
        kept = len(scan(self.run_dir).files)
        self._print(f"cleaned {printable(str(self.run_dir))}" + (f" ({kept} files the runner did not write kept)"
                                                                 if kept else ""))

    def _reset_to(self, label: str) -> None:
        """Restore ``label``'s checkpoint (and the earlier ones it was built on) and forget later steps."""
        manifest = self.store.load(label)
        if manifest is None:
            last = self.journal.last(label)
            why = f"its last attempt {last['status']}" if last else "it never ran"
            raise cli.UsageError(f"--reset-to {label}: there is no checkpoint of {label} ({why})")
        index = self.labels.index(label)
        stats = self._restore(manifest, forget_from=index + 1)
        self._rederive_chain(manifest, index)
        self.journal.note(label, "reset", f"directory reset to the checkpoint of {label}")
        self._print(f"reset {printable(str(self.run_dir))} to the checkpoint of {label} "
                    f"({stats.removed} removed, {stats.restored} restored, {stats.kept} kept)")

    def _rederive_chain(self, manifest: Manifest, index: int) -> None:
        """Earlier checkpoints replaced since ``manifest`` was taken are rebuilt from it: the build it holds
        comes back whole (its earlier steps up to date again)."""
        chain = manifest.meta.get("chain", [])
        for position, item in enumerate(chain[:index]):
            if not (isinstance(item, list) and len(item) == 3 and isinstance(item[2], dict)):
                continue
            label, ckpt_id, meta = item
            current = self.store.load(label) if label in self.store.labels() else None
            if current is not None and current.id == ckpt_id:
                continue
            writers = set(self.labels[: position + 1])
            rels = [rel for rel, entry in manifest.files.items() if entry.get("by") in writers]
            self.store.derive(manifest, label, rels, ckpt_id, meta)

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
        self.memory.start({s.label: s.parts["params"] for s in plan.to_run})
        dirty = self._prepare(plan)
        previous = plan.base
        for count, status in enumerate(plan.to_run, 1):
            self._print(f"[{count}/{len(plan.to_run)}] {status.label}: running ({status.reason})")
            outcome, manifest = self._run_one(status, dirty, previous)
            if outcome.status != "done":
                return RunResult(outcome.exit_code, self._failure_message(status.label, outcome),
                                 tuple(self.ran), skipped)
            previous, dirty = manifest, False
        self._bring_back_later(plan.target)
        return RunResult(0, ran=tuple(self.ran), skipped=skipped, state=self._state_after(plan.target))

    def _bring_back_later(self, target: int) -> None:
        """Later steps whose inputs came out byte-identical are still valid: put their outputs back."""
        statuses = make_plan(self.steps, self.ns, self.store, self.journal, target, False, inputs=self.inputs).statuses
        valid = None
        for status in statuses[target + 1:]:
            stored = status.manifest.meta.get("parts", {}) if status.manifest else None
            if stored is None or compare_parts(stored, status.parts) is not None or self.store.verify(status.manifest):
                break
            valid = status
        if valid is not None:
            self._restore(valid.manifest)
            self._print(f"kept the checkpoints up to {valid.label}: their inputs came out byte-identical")

    def _validate(self, plan: Plan, skipped: tuple[str, ...]) -> RunResult | None:
        """Every step about to run checks its input first: bad input ends the run before anything is touched."""
        for check in ("precheck", "validate"):  # every quick check first: a late step's bad flag is found at once
            for status in plan.to_run:
                try:
                    getattr(status.step.cls, check)(self.ns)
                except CommandError as exc:
                    return RunResult(exc.exit_code, f"step {status.label}: {exc}", skipped=skipped)
        return None

    def _prepare(self, plan: Plan) -> bool:
        """Reset the runner's files to the base checkpoint unless resuming or --allow-dirty; returns ``dirty``."""
        first = plan.to_run[0]
        if first.resume:
            self._print(f"resuming {first.label} on its partial outputs (resumable step, last attempt unfinished)")
            return True
        if first.repair:
            own = set(first.manifest.files) - set(plan.base.files if plan.base else ())
            self._print(f"repairing {first.label} on its own outputs (resumable step; they were modified)")
            self._restore(plan.base, keep=sorted(own))
            return True
        if self.ns.allow_dirty:
            return bool(self.store.diff(plan.base))
        self._restore(plan.base)
        return False

    def _move_strangers(self, outputs: tuple[str, ...]) -> None:
        """Files the runner did not write where the step will write are moved aside, never overwritten."""
        for rel in self.owned.strangers(outputs):
            where = self.owned.move_aside(rel)
            self._print(f"moved a file the runner did not write out of the way: {printable(str(where))}")

    def _upstream(self, index: int) -> list[list[str]]:
        ids = []
        for step in self.steps[:index]:
            manifest = self.store.load(step.label)
            ids.append([step.label, manifest.content_id if manifest else ""])
        return ids

    def _chain(self, index: int) -> list[list[Any]]:
        chain = []
        for step in self.steps[:index]:
            manifest = self.store.load(step.label)
            if manifest is not None:  # its own chain is left out: chains would nest, doubling at each step
                chain.append([step.label, manifest.id, {k: v for k, v in manifest.meta.items() if k != "chain"}])
        return chain

    def _run_one(self, status: StepStatus, dirty: bool,
                 previous: Manifest | None) -> tuple[Outcome, Manifest | None]:
        """One attempt: journal, run, claim what it wrote, verify, checkpoint."""
        step, index = status.step, status.index
        parts = step_parts(step, self.ns, self._upstream(index), self.inputs)
        known = tuple(status.manifest.own_files()) if status.manifest else ()
        self._move_strangers(step.cls.outputs + known)
        before = stat_keys(scan(self.run_dir))
        atomic_write_json(self.hidden / ATTEMPT, {"label": step.label, "outputs": list(step.cls.outputs),
                                                  "before": before}, compact=True)
        self.open_record = record = self.journal.start(step.label, fingerprint(parts), parts, status.reason)
        self.runner.emit({"event": "step", "label": step.label, "status": "running", "reason": status.reason})
        state = BuildState(self.run_dir, tuple(self.labels[:index]), self.labels[index - 1] if index else None,
                           dirty, status.reason)
        log_path = self.runner.log_path(step.label)
        outcome = run_step(lambda: step.cls(self.ns, self.runner), state, log_path, step.label)
        tree = scan(self.run_dir)
        self.owned.claim(tree, written(before, tree, step.cls.outputs))
        self.owned.save()
        (self.hidden / ATTEMPT).unlink(missing_ok=True)
        manifest = None
        if outcome.status == "done":
            outcome, manifest = self._checkpoint(step.label, index, parts, previous, outcome)
        self.memory.finish(step.label, outcome.status, parts["params"])  # a failed checkpoint is a failed outcome
        self.runner.emit({"event": "step", "label": step.label, "status": outcome.status,
                          "seconds": round(time.time() - record["start"], 3)})
        if manifest is None:
            self.journal.finish(record, outcome.status, error=outcome.error, peak_rss_bytes=outcome.peak_rss_bytes)
            self.open_record = None
            return outcome, None
        own = manifest.own_files()
        count, size = len(own), sum(manifest.files[rel]["size"] for rel in own)
        self.journal.finish(record, "done", checkpoint=manifest.id, files_written=count, bytes_written=size,
                            peak_rss_bytes=outcome.peak_rss_bytes)
        self.open_record = None
        self.ran.append(step.label)
        self._print(f"      {step.label}: done in {record['duration_s']:.1f}s "
                    f"({count} files, {human_bytes(size)} written; checkpoint taken)")
        return outcome, manifest

    def _checkpoint(self, label: str, index: int, parts: dict[str, Any], previous: Manifest | None,
                    outcome: Outcome) -> tuple[Outcome, Manifest | None]:
        """Refuse to checkpoint over damaged earlier checkpoints; else snapshot the runner's files."""
        problems = self._damaged_before(index)
        if problems:
            error = ("the step modified checkpointed files in place (write to a temp file and os.replace "
                     "instead): " + "; ".join(problems[:3]))
            return Outcome("failed", 1, error, outcome.peak_rss_bytes), None
        tree = scan(self.run_dir)
        owners = {rel: label for rel, st in tree.files.items() if self.owned.owns(rel, st)}
        if previous is not None:
            for rel, entry in previous.files.items():
                if rel in owners and self.store.same_content(self.run_dir / rel, tree.files[rel], entry):
                    owners[rel] = entry["by"]
        meta = {"fingerprint": fingerprint(parts), "parts": parts, "chain": self._chain(index)}
        try:
            manifest = self.store.snapshot(label, meta, owners, known=previous)
        except OSError as exc:
            return Outcome("failed", 1, f"checkpoint failed: {exc}", outcome.peak_rss_bytes), None
        return outcome, manifest

    def _damaged_before(self, index: int) -> list[str]:
        problems = []
        for label in self.labels[:index]:
            manifest = self.store.load(label)
            if manifest is not None:
                problems += [f"{label}: {p}" for p in self.store.verify(manifest, refresh=True)]
        return problems

    def _failure_message(self, label: str, outcome: Outcome) -> str:
        kept = self._previous_build()
        if outcome.status == "interrupted":
            return (f"step {label} {outcome.error}; no checkpoint taken, the journal says interrupted, "
                    f"the next run resets or resumes it" + kept)
        log = printable(str(self.runner.log_path(label)))
        return f"step {label} failed: {outcome.error} (log: {log})" + kept

    def _previous_build(self) -> str:
        """A note that the last step's older checkpoint is still there to go back to."""
        last = self.labels[-1]
        if last in self.store.labels() and last not in self.ran:
            return f"; the previous build is kept: --reset-to {last} brings it back"
        return ""
