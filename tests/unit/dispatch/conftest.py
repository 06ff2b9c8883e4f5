"""Fixtures for the dispatch tests; the fakes live in dispatch_fakes.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the test modules import dispatch_fakes by name

from dispatch_fakes import FakeKernel  # noqa: E402


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    (path / "build_state.json").write_text('{"format_version": 1}\n')
    (path / "dataset.h5").write_bytes(b"not really hdf5")
    return path


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    return FakeKernel(tmp_path / "attempts")
