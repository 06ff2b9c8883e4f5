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


def test_snapshot_hard_links_every_file_and_skips_the_runner_folder(store, tmp_path):
    (tmp_path / ".runner").mkdir(exist_ok=True)
    (tmp_path / ".runner" / "private").write_text("not part of the run")
    manifest = store.snapshot("one", {"k": 1})
    assert set(manifest.files) == {"a.txt", "sub/b.bin", "sub/deep/c.json"}
    assert manifest.copies == 0 and manifest.symlinks == {"link": "a.txt"} and "empty" in manifest.dirs
    for rel in manifest.files:
        assert os.stat(tmp_path / rel).st_ino == os.stat(manifest.files_dir / rel).st_ino
    assert "sha256" in manifest.files["a.txt"] and "sha256" not in manifest.files["sub/b.bin"]
    assert store.load("one").meta == {"k": 1} and store.labels() == ["one"]
    assert store.verify(manifest) == []


def test_restore_makes_the_exact_file_set(store, tmp_path):
    before_files, before_dirs = _files(tmp_path), _dirs(tmp_path)
    manifest = store.snapshot("one", {})
    (tmp_path / "new.txt").write_text("added")  # added
    (tmp_path / "newdir" / "x").mkdir(parents=True)  # added directories
    (tmp_path / "sub" / "deep" / "c.json").unlink()  # removed
    (tmp_path / "empty").rmdir()  # removed empty dir
    tmp = tmp_path / "a.tmp"
    tmp.write_text("replaced properly")
    os.replace(tmp, tmp_path / "a.txt")  # modified the right way: a new inode
    (tmp_path / "link").unlink()
    (tmp_path / "link").symlink_to("sub")  # symlink retargeted
    stats = store.restore(manifest)
    assert _files(tmp_path) == before_files and _dirs(tmp_path) == before_dirs
    assert os.readlink(tmp_path / "link") == "a.txt"
    assert stats.removed >= 3 and stats.restored >= 3 and stats.kept == 1
    assert store.verify(manifest) == []


def test_restore_of_nothing_empties_the_directory_but_not_the_runner_folder(store, tmp_path):
    (tmp_path / ".runner").mkdir(exist_ok=True)
    (tmp_path / ".runner" / "keep").write_text("x")
    store.restore(None)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".runner"]
    assert (tmp_path / ".runner" / "keep").exists()


def test_edit_in_place_is_detected_and_never_restored_from(store, tmp_path):
    manifest = store.snapshot("one", {})
    with open(tmp_path / "sub" / "b.bin", "r+b") as handle:  # same size, new bytes: a shared inode
        handle.write(b"\0" * 10)
    problems = store.verify(manifest)
    assert problems and problems[0].startswith("sub/b.bin: modified in place")
    with pytest.raises(CheckpointError, match="damaged.*sub/b.bin.*--to one"):
        store.restore(manifest)


def test_size_change_and_small_file_content_change_are_detected(store, tmp_path):
    manifest = store.snapshot("one", {})
    st = os.stat(tmp_path / "a.txt")
    (tmp_path / "a.txt").write_text("ALPHA")  # same size, then the mtime put back
    os.utime(tmp_path / "a.txt", ns=(st.st_atime_ns, st.st_mtime_ns))
    with open(tmp_path / "sub" / "deep" / "c.json", "a") as handle:
        handle.write(" ")
    problems = "\n".join(store.verify(manifest))
    assert "a.txt: modified in place (content changed)" in problems
    assert "c.json: modified in place (size 2 -> 3)" in problems


def test_mtime_restoring_write_to_a_large_file_is_caught_by_ctime(store, tmp_path):
    manifest = store.snapshot("one", {})
    path = tmp_path / "sub" / "b.bin"
    st = os.stat(path)
    with open(path, "r+b") as handle:
        handle.write(b"\1" * 10)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert store.verify(manifest) == ["sub/b.bin: changed in place (ctime moved, link count did not)"]


def test_link_count_changes_from_proper_replacements_are_not_tampering(store, tmp_path):
    first = store.snapshot("one", {})
    second = store.snapshot("two", {})  # links the same inodes again: their ctime moves
    tmp = tmp_path / "b.tmp"
    tmp.write_bytes(b"new shard")
    os.replace(tmp, tmp_path / "sub" / "b.bin")  # drops a link: ctime moves again
    (tmp_path / "a.txt").unlink()
    assert store.verify(first, refresh=True) == [] and store.verify(second, refresh=True) == []
    store.restore(first)
    store.delete("two")
    assert store.verify(first) == []
    assert store.labels() == ["one"]


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
    (tmp_path / "extra").write_text("x")
    assert store.verify(manifest) == []
    store.restore(manifest)
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
    assert sorted(p.name for p in store.root.iterdir()) == ["one", "stamps.json"]


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
