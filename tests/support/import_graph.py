"""The project's import graph, read from source with `ast` (nothing is imported).

Nodes are modules (`runner.cli`, `policyengine_us_data.shards.shards`); an edge is any `import` or
`from ... import` of one of our modules, wherever it appears in the file (a function-level import is still a
dependency, and so is one under `if TYPE_CHECKING:`: a type-only circle still ties the files together). Folders are the layers: `runner`, `commands`,
and each first-level sub-package of `policyengine_us_data` (`calibration`, `outputs`, ...); a module directly in
`policyengine_us_data/` (`errors`, `states`) is a folder of its own, since the root package is a namespace,
not a layer. Upstream's two front ends (`UnifiedMatrixBuilder`, `unified_calibration`) must keep upstream's module
paths inside `calibration/` but sit above everything they drive, so they form the `compat` layer wherever their
files live.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterable, Mapping

ROOTS = ("runner", "commands", "policyengine_us_data")
COMPAT = "policyengine_us_data.compat"
UPSTREAM_FRONT_ENDS = frozenset({
    "policyengine_us_data.calibration.unified_matrix_builder",
    "policyengine_us_data.calibration.unified_calibration",
})


def module_name(path: Path, repo: Path) -> str:
    parts = list(path.relative_to(repo).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.AST, module: str, is_package: bool) -> Iterable[tuple[str, tuple[str, ...]]]:
    """(module, names taken from it) for every import in `tree`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            yield from ((alias.name, ()) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join(package + ([base] if base else []))
            yield base, tuple(alias.name for alias in node.names)
            continue
        stack.extend(ast.iter_child_nodes(node))


def build_graph(repo: Path, roots: Iterable[str] = ROOTS) -> dict[str, set[str]]:
    """module -> the set of our modules it imports (names resolved to existing modules)."""
    files = {module_name(p, repo): p for root in roots for p in (repo / root).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        targets = set()
        for base, names in _imports(tree, name, path.name == "__init__.py"):
            # `from pkg import mod` depends on the module `pkg.mod`; `from pkg import name` on `pkg` itself
            submodules = {f"{base}.{n}" for n in names} & files.keys()
            targets.update(submodules if submodules else {base} & files.keys())
        targets.discard(name)
        graph[name] = targets
    return graph


def folder_of(module: str) -> str:
    if module in UPSTREAM_FRONT_ENDS:
        return COMPAT
    parts = module.split(".")
    if parts[0] != "policyengine_us_data" or len(parts) == 1:
        return parts[0]
    return ".".join(parts[:2])


def folder_graph(graph: Mapping[str, set[str]]) -> dict[str, set[str]]:
    folders: dict[str, set[str]] = {}
    for module, targets in graph.items():
        edges = folders.setdefault(folder_of(module), set())
        edges.update(folder_of(t) for t in targets if folder_of(t) != folder_of(module))
    return folders


def find_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted; [] when acyclic."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)
