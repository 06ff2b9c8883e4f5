"""The layers point one way: no import cycle between files or folders, the runner imports nothing of ours, and
the library imports neither the runner nor the commands. Read from source with `ast` (nothing is imported)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.import_graph import (
    COMPAT,
    build_graph,
    find_cycles,
    folder_graph,
    folder_of,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return build_graph(REPO)


def test_the_graph_sees_the_project(graph) -> None:
    assert "runner.session" in graph["runner.runner"]  # a relative `from .session import`
    assert "commands.layout" in graph["commands.dispatch_chunks"]
    assert "policyengine_us_data.pipeline.chunks" in graph["commands.dispatch_chunks"]
    assert len(graph) > 90


def test_no_file_imports_a_module_that_imports_it_back(graph) -> None:
    assert find_cycles(graph) == []


def test_no_folder_imports_a_folder_that_imports_it_back(graph) -> None:
    assert find_cycles(folder_graph(graph)) == []


def test_the_runner_imports_nothing_of_ours(graph) -> None:
    bad = {m: sorted(t for t in targets if not t.startswith("runner"))
           for m, targets in graph.items() if m.startswith("runner")}
    assert {m: t for m, t in bad.items() if t} == {}


def test_the_library_imports_neither_the_runner_nor_the_commands(graph) -> None:
    bad = {m: sorted(t for t in targets if t.split(".")[0] in ("runner", "commands"))
           for m, targets in graph.items() if m.startswith("policyengine_us_data")}
    assert {m: t for m, t in bad.items() if t} == {}


def test_the_checker_finds_file_and_folder_cycles(tmp_path: Path) -> None:
    """A synthetic project with a two-file circle (one import relative, one under TYPE_CHECKING) and a folder
    circle between acyclic files: both are found; removing the back edges leaves none."""
    pkg = tmp_path / "policyengine_us_data"
    for folder in ("a", "b"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "one.py").write_text("from . import two\n")
    (pkg / "a" / "two.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                      "    from policyengine_us_data.a.one import X\n")
    (pkg / "a" / "three.py").write_text("def f():\n    from policyengine_us_data.b import low\n")
    (pkg / "b" / "low.py").write_text("import policyengine_us_data.a.two\n")
    graph = build_graph(tmp_path, roots=("policyengine_us_data",))
    assert find_cycles(graph) == [["policyengine_us_data.a.one", "policyengine_us_data.a.two"]]
    assert find_cycles(folder_graph(graph)) == [["policyengine_us_data.a", "policyengine_us_data.b"]]
    (pkg / "a" / "two.py").write_text("X = 1\n")
    (pkg / "b" / "low.py").write_text("Y = 2\n")
    graph = build_graph(tmp_path, roots=("policyengine_us_data",))
    assert find_cycles(graph) == [] and find_cycles(folder_graph(graph)) == []


def test_upstreams_front_ends_are_the_compat_layer() -> None:
    assert folder_of("policyengine_us_data.calibration.unified_matrix_builder") == COMPAT
    assert folder_of("policyengine_us_data.outputs.report") == "policyengine_us_data.outputs"
    assert folder_of("policyengine_us_data.errors") == "policyengine_us_data.errors"
    assert folder_of("runner.cli") == "runner"
