"""A step's code identity: the project modules it runs, found by following its imports within the project.

Starting from the module that defines the step class, every ``import`` / ``from ... import`` is resolved (without
importing anything new) and followed when it lands in the same project: a source file under the same root as
the step's top-level package, outside site-packages. Each file's hash joins the identity, so editing any module
a step reaches makes it stale, and the reason names the file. Hashes are cached per process by file stat.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import sys
from pathlib import Path

_RUNNER_PACKAGE = str(Path(__file__).resolve().parent) + os.sep  # the runner itself is not a step's code
_FILE_HASH: dict[str, tuple[tuple[int, int], str]] = {}
_IMPORTS: dict[str, tuple[tuple[int, int], list[str]]] = {}


def _stat(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return (st.st_size, st.st_mtime_ns)


def _file_hash(path: str) -> str:
    key = _stat(path)
    cached = _FILE_HASH.get(path)
    if cached is None or cached[0] != key:
        cached = (key, hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16])
        _FILE_HASH[path] = cached
    return cached[1]


def _imported_names(path: str, module: str, is_package: bool) -> list[str]:
    """Absolute names of the modules ``path`` imports (``from a import b`` yields ``a`` and ``a.b``)."""
    key = _stat(path)
    cached = _IMPORTS.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    package = module if is_package else module.rpartition(".")[0]
    names: list[str] = []
    try:
        tree = ast.parse(Path(path).read_bytes())
    except (SyntaxError, ValueError):
        tree = ast.Module(body=[], type_ignores=[])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                prefix = ".".join(parts[: len(parts) - node.level + 1]) if node.level <= len(parts) else ""
                base = f"{prefix}.{base}".strip(".") if base else prefix
            if base:
                names.append(base)
                names += [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]
    _IMPORTS[path] = (key, names)
    return names


def _origin(name: str) -> tuple[str, bool] | None:
    """The source file of the loaded module ``name`` and whether it is a package."""
    spec = getattr(sys.modules.get(name), "__spec__", None)
    if spec is None:
        try:
            spec = importlib.util.find_spec(name) if "." not in name else None
        except (ImportError, ValueError):
            return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return spec.origin, spec.submodule_search_locations is not None


def _in_project(name: str, root: Path, tops: set[str]) -> tuple[str, bool] | None:
    """The file of project module ``name`` by path alone (nothing is imported), or None."""
    if name.split(".")[0] not in tops:
        return None
    base = root.joinpath(*name.split("."))
    for path, is_package in ((base / "__init__.py", True), (base.with_suffix(".py"), False)):
        if path.is_file():
            return str(path), is_package
    return None


def project_files(module: str) -> dict[str, str]:
    """``{path relative to the project root: short sha256}`` for ``module`` and every project module it
    imports, transitively."""
    start = _origin(module)
    if start is None:
        return {}
    top = module.split(".")[0]
    top_origin = _origin(top)
    root = Path(top_origin[0]).parent.parent if top_origin and top_origin[1] else Path(start[0]).parent
    if "site-packages" in str(root):
        return {os.path.basename(start[0]): _file_hash(start[0])}
    tops = {p.name for p in root.iterdir() if (p / "__init__.py").is_file()} | {p.stem for p in root.glob("*.py")}
    seen: dict[str, str] = {}
    stack = [(module, *start)]
    while stack:
        name, path, is_package = stack.pop()
        if path in seen:
            continue
        seen[path] = name
        for imported in _imported_names(path, name, is_package):
            found = _in_project(imported, root, tops)
            if found and found[0] not in seen and not found[0].startswith(_RUNNER_PACKAGE):
                stack.append((imported, *found))
    return {os.path.relpath(path, root).replace(os.sep, "/"): _file_hash(path) for path in sorted(seen)}
