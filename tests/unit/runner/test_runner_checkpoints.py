"""Checkpoints: hard links (or copies), exact restores, and detection of files edited in place."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from runner import checkpoints
from runner.checkpoints import CheckpointError, CheckpointStore


def _tree(root: Path) -> None:
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_text("alpha")
    (root / "sub" / "b.bin").write_bytes(os.urandom(100_000))  # above the hash limit
    (root / "sub" / "deep" / "c.json").write_text("{}")
    (root / "link").symlink_to("a.txt")


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink() and ".runner" not in p.parts}


def _dirs(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_dir() and ".runner" not in p.parts}


@pytest.fixture
def store(tmp_path) -> CheckpointStore:
    _tree(tmp_path)
    return CheckpointStore(tmp_path)


def _owns_all(rel, st) -> bool:
    return True


def _never_aside(rel):
    raise AssertionError(f"moved aside {rel}")


def test_snapshot_hard_links_every_file_and_skips_the_runner_folder(store, tmp_path):
    (tmp_path / ".runner").mkdir(exist_ok=True)
    (tmp_path / ".runner" / "private").write_text("not part of the run")
    manifest = store.snapshot("one", {"k": 1})
    assert set(manifest.files) == {"a.txt", "sub/b.bin", "sub/deep/c.json"}
    assert manifest.copies == 0 and manifest.symlinks == {}
    for rel in manifest.files:
        assert os.stat(tmp_path / rel).st_ino == os.stat(manifest.files_dir / rel).st_ino
    assert all(e["hash"].startswith("xxh3:") and e["by"] == "one" for e in manifest.files.values())
    assert store.load("one").meta == {"k": 1} and store.labels() == ["one"]
    assert store.verify(manifest) == []


def test_restore_puts_back_the_runners_files(store, tmp_path):
    before_files = _files(tmp_path)
    manifest = store.snapshot("one", {})
    (tmp_path / "new.txt").write_text("added")
    (tmp_path / "sub" / "deep" / "c.json").unlink()  # removed
    tmp = tmp_path / "a.tmp"
    tmp.write_text("replaced properly")
    os.replace(tmp, tmp_path / "a.txt")  # modified the right way: a new inode
    stats = store.restore(manifest, _owns_all, _never_aside)
    assert {k: v for k, v in _files(tmp_path).items() if k != "new.txt"} == before_files
    assert stats.removed == 1 and stats.restored == 2 and stats.kept == 1
    assert store.verify(manifest) == []


def test_restore_never_removes_or_overwrites_what_owns_rejects(store, tmp_path):
    manifest = store.snapshot("one", {})
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "a.txt").unlink()
    (tmp_path / "a.txt").write_text("my own a")
    moved = []

    def aside(rel):
        dest = tmp_path / "aside" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(tmp_path / rel, dest)
        moved.append(rel)
        return dest

    store.restore(None if False else manifest, lambda rel, st: rel != "a.txt" and rel != "notes.txt", aside)
    assert moved == ["a.txt"] and (tmp_path / "aside" / "a.txt").read_text() == "my own a"
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "a.txt").read_text() == "alpha"
    store.restore(None, lambda rel, st: rel != "notes.txt", aside)
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (tmp_path / "a.txt").exists()


def test_edit_in_place_is_detected_and_never_restored_from(store, tmp_path):
    manifest = store.snapshot("one", {})
    with open(tmp_path / "sub" / "b.bin", "r+b") as handle:  # same size, new bytes: a shared inode
        handle.write(b"\0" * 10)
    problems = store.verify(manifest)
    assert problems and problems[0].startswith("sub/b.bin: modified in place")
    with pytest.raises(CheckpointError, match="damaged.*sub/b.bin.*--to one"):
        store.restore(manifest, _owns_all, _never_aside)


def test_size_change_and_content_change_are_detected(store, tmp_path):
    manifest = store.snapshot("one", {})
    (tmp_path / "a.txt").write_text("ALPHA")
    with open(tmp_path / "sub" / "deep" / "c.json", "a") as handle:
        handle.write(" ")
    problems = "\n".join(store.verify(manifest))
    assert "a.txt: modified in place" in problems and "c.json: modified in place" in problems


@pytest.mark.parametrize("change", ["chmod", "touch", "copy-a"])
def test_metadata_only_changes_never_invalidate(store, tmp_path, change):
    """chmod, touch and cp -a (a new inode, same bytes and mtime) change no byte: nothing is stale."""
    import shutil

    manifest = store.snapshot("one", {})
    path = tmp_path / "sub" / "b.bin"
    if change == "chmod":
        os.chmod(path, 0o600)
    elif change == "touch":
        os.utime(path)
    else:
        shutil.copy2(path, tmp_path / "b.copy")
        os.replace(tmp_path / "b.copy", path)
    assert store.verify(manifest) == [] and store.live_problems(manifest, manifest.files) == []


def test_live_outputs_missing_or_replaced_are_named(store, tmp_path):
    manifest = store.snapshot("one", {})
    (tmp_path / "a.txt").unlink()
    (tmp_path / "sub" / "b.tmp").write_bytes(os.urandom(100_000))
    os.replace(tmp_path / "sub" / "b.tmp", tmp_path / "sub" / "b.bin")
    assert store.live_problems(manifest, sorted(manifest.files)) == ["output missing: a.txt",
                                                                    "output changed: sub/b.bin"]


def test_copy_fallback_when_hard_links_are_refused(store, tmp_path, monkeypatch):
    def refuse(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(checkpoints, "link_file", refuse)
    before = _files(tmp_path)
    manifest = store.snapshot("one", {})
    assert manifest.copies == len(manifest.files) == 3
    for rel in manifest.files:
        assert os.stat(tmp_path / rel).st_ino != os.stat(manifest.files_dir / rel).st_ino
    with open(tmp_path / "sub" / "b.bin", "r+b") as handle:  # an in-place edit cannot reach a copy
        handle.write(b"\0" * 10)
    assert store.verify(manifest) == []
    store.restore(manifest, _owns_all, _never_aside)
    assert _files(tmp_path) == before


def test_unreadable_manifest_is_a_checkpoint_error(store):
    manifest = store.snapshot("one", {})
    (manifest.path / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="manifest unreadable"):
        store.load("one")


def test_sweep_removes_leftovers_of_a_killed_snapshot(store):
    store.snapshot("one", {})
    (store.root / ".tmp-two-dead").mkdir()
    (store.root / ".trash-one-dead").mkdir()
    assert store.labels() == ["one"]
    store.sweep()
    assert sorted(p.name for p in store.root.iterdir()) == ["one"]


def test_runner_refuses_reset_to_a_damaged_checkpoint(toy, run_dir):
    toy.run([])
    with open(run_dir / "dispatch.txt", "a") as handle:
        handle.write("in place")
    result = toy.run(["--reset-to", "verify"])
    assert result.exit_code == 2 and "checkpoint 'verify' is damaged" in result.message
    assert "dispatch.txt" in result.message


def test_a_step_editing_an_earlier_output_in_place_fails(make_runner, run_dir):
    toy = make_runner(run_dir, ("prepare", "cache"))
    toy.run(["--to", "prepare"])
    original = toy._steps["cache"].cls.run

    def clobber(self, state):
        with open(state.run_dir / "prepare.txt", "a") as handle:
            handle.write("clobbered")
        original(self, state)

    toy._steps["cache"].cls.run = clobber
    try:
        result = toy.run([])
    finally:
        toy._steps["cache"].cls.run = original
    assert result.exit_code == 1 and "modified checkpointed files in place" in result.message
    assert "cache" not in CheckpointStore(run_dir).labels()
    assert toy.run([]).ran == ("prepare", "cache")  # the damaged prepare checkpoint is rebuilt
