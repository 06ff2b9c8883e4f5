"""What runs and why: up-to-date skips, staleness reasons, --force, --status, --list, --dry-run."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

from runner import CommandRunner


def test_first_run_runs_everything_then_nothing(toy, run_dir, live):
    first = toy.run([])
    assert first.exit_code == 0
    assert first.ran == ("prepare", "cache", "dispatch", "verify", "assemble")
    assert toy.toy.calls[0][1].reason == "never run"
    assert set(live(run_dir)) == {f"{label}.txt" for label in first.ran}
    second = toy.run([])
    assert second.ran == () and second.skipped == first.ran
    assert second.state.completed == first.ran and second.state.current == "assemble"


def test_to_stops_at_the_target_and_later_runs_continue(toy):
    assert toy.run(["--to", "cache"]).ran == ("prepare", "cache")
    result = toy.run(["--to", "verify"])
    assert result.ran == ("dispatch", "verify") and result.skipped == ("prepare", "cache")
    state = toy.toy.calls[-2][1]
    assert state.completed == ("prepare", "cache") and state.current == "cache" and not state.dirty


def test_param_change_makes_that_step_and_all_later_stale(toy, run_dir, live, capsys):
    toy.run([])
    capsys.readouterr()
    toy.main(["--chunk-size", "1000", "--status"])
    table = capsys.readouterr().out
    assert "chunk_size changed: 25000 -> 1000" in table
    rows = {line.split()[1]: line for line in table.splitlines()[1:]}
    assert "done" in rows["cache"] and "stale" in rows["dispatch"]
    assert "an earlier step will re-run: dispatch" in rows["verify"]
    assert "an earlier step will re-run: dispatch" in rows["assemble"]
    toy.toy.calls.clear()
    result = toy.run(["--chunk-size", "1000"])
    assert result.ran == ("dispatch", "verify", "assemble")
    assert toy.toy.calls[0][1].reason == "chunk_size changed: 25000 -> 1000"
    assert '"chunk_size": 1000' in live(run_dir)["dispatch.txt"]
    assert toy.run(["--chunk-size", "1000"]).ran == ()


def test_force_reruns_the_target_and_later_steps_see_an_earlier_rerun(toy, capsys):
    toy.run([])
    result = toy.run(["--to", "dispatch", "--force"])
    assert result.ran == ("dispatch",)
    assert toy.toy.calls[-1][1].reason == "forced (--force)"
    capsys.readouterr()
    toy.main(["--status"])
    rows = {line.split()[1]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "up to date" in rows["verify"]  # dispatch gave the same bytes: nothing downstream is stale
    assert toy.run([]).ran == ()
    toy.run(["--to", "dispatch", "--chunk-size", "7"])
    capsys.readouterr()
    toy.main(["--status"])
    rows = {line.split()[1]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "stale" in rows["verify"] and "stale" in rows["assemble"]
    assert toy.run([]).ran == ("verify", "assemble")


def test_outputs_modified_since_the_checkpoint(toy, run_dir):
    toy.run([])
    with open(run_dir / "verify.txt", "a") as handle:  # an in-place edit shares the checkpoint's inode
        handle.write("edited\n")
    result = toy.run(["--dry-run"])
    assert result.exit_code == 0
    toy.toy.calls.clear()
    assert toy.run([]).ran == ("verify", "assemble")
    assert toy.toy.calls[0][1].reason.startswith("outputs modified since the checkpoint: verify.txt")
    assert "edited" not in (run_dir / "verify.txt").read_text()


def test_list_status_and_dry_run_output(toy, capsys, run_dir):
    assert toy.main(["--list"]) == 0
    assert capsys.readouterr().out.split() == ["prepare", "cache", "dispatch", "verify", "assemble"]
    assert toy.main(["--status"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"run directory: {run_dir} (does not exist yet)"
    assert out.splitlines()[1].split() == ["order", "label", "state", "reason", "finished", "duration", "output"]
    assert out.count("pending") == 5 and "never run" in out
    assert not run_dir.exists()  # reports are read-only
    toy.run(["--to", "cache"])
    capsys.readouterr()
    assert toy.main(["--to", "verify", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "reset the runner's files to the checkpoint of cache" in out
    assert "dispatch: never run" in out and "verify: never run" in out and "assemble" not in out
    assert "up to date: prepare, cache" in out
    assert toy.toy.ran == ["prepare", "cache"]  # dry run ran nothing
    toy.main(["--status"])
    rows = capsys.readouterr().out.splitlines()
    assert "done" in rows[2] and " B" in rows[2] and "s " in rows[2]


def _write_step_module(path: Path, body: str) -> None:
    path.write_text(textwrap.dedent(f"""
        from runner import BaseCommand

        class Generated(BaseCommand):
            def run(self, state):
                (state.run_dir / "gen.txt").write_text({body!r})
    """))


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _runner_with(module, run_dir: Path) -> CommandRunner:
    runner = CommandRunner(run_dir)
    runner.register("gen", 0)(module.Generated)
    return runner


def test_code_change_makes_a_step_stale(tmp_path, capsys):
    source = tmp_path / "gen_step_module.py"
    _write_step_module(source, "v1")
    try:
        first = _runner_with(_load(source, "gen_step_v1"), tmp_path / "run")
        assert first.run([]).ran == ("gen",)
        assert first.run([]).ran == ()
        _write_step_module(source, "version two")
        second = _runner_with(_load(source, "gen_step_v2"), tmp_path / "run")
        capsys.readouterr()
        second.main(["--status"])
        assert "code changed" in capsys.readouterr().out
        assert second.run([]).ran == ("gen",)
        assert (tmp_path / "run" / "gen.txt").read_text() == "version two"
    finally:
        sys.modules.pop("gen_step_v1", None)
        sys.modules.pop("gen_step_v2", None)


def test_unset_params_are_remembered_and_explicit_ones_win(toy, run_dir, capsys):
    assert toy.main(["--to", "assemble", "--chunk-size", "500"]) == 0
    toy.toy.calls.clear()
    assert toy.main(["--reset-to", "dispatch", "--to", "assemble"]) == 0
    assert toy.toy.ran == ["verify", "assemble"]  # dispatch kept chunk_size 500, so it stays done
    assert "remembered from the last run: chunk_size=500" in capsys.readouterr().out
    toy.toy.calls.clear()
    assert toy.main(["--to", "assemble", "--chunk-size", "600"]) == 0
    assert toy.toy.ran == ["dispatch", "verify", "assemble"]
    assert "chunk_size changed: 500 -> 600" in toy.toy.calls[0][1].reason
    toy.toy.calls.clear()
    assert toy.main(["--to", "assemble", "--forget-params"]) == 0
    assert "chunk_size changed: 600 -> 25000" in toy.toy.calls[0][1].reason
