"""Every fenced bash and python example in README.md either runs as written (the cheap ones: --help, --status,
--list, --dry-run, --version, --plan, and the pipeline snippet with the toy simulator) or says in its comment what it
needs (a comment containing "needs", on the command or at the top of its block). Snippets that are not run are
still compiled, their imports executed, and every name they use must be defined."""

from __future__ import annotations

import ast
import builtins
import json
import re
import shlex
import subprocess

import pytest

from tests.reliability.conftest import REPO, TOY_SIM, subprocess_env

README = REPO / "README.md"
CHEAP = {"--help", "--status", "--list", "--dry-run", "--version", "--plan"}
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(README.read_text()) if lang == language]


def bash_commands() -> list[tuple[str, str, bool]]:
    """(command, its comment, whether the block says at its top what it needs) for every bash example."""
    found = []
    for body in blocks("bash"):
        text = body.replace("\\\n", " ")
        lines = [line for line in text.splitlines() if line.strip()]
        block_needs = bool(lines) and lines[0].lstrip().startswith("#") and "needs" in lines[0]
        for line in lines:
            if line.lstrip().startswith("#"):
                continue
            parts = re.split(r"\s#\s", line + " ", maxsplit=1)  # the command, then its comment
            found.append((parts[0].strip(), parts[1].strip() if len(parts) > 1 else "", block_needs))
    return found


def _cheap(command: str) -> bool:
    return bool(CHEAP & set(shlex.split(command))) and command.split()[0] in ("bin/build-matrix", "python")


def test_the_readme_has_examples_of_each_kind():
    commands = bash_commands()
    assert sum(_cheap(c) for c, _, _ in commands) >= 6
    assert len(blocks("python")) >= 2


@pytest.mark.parametrize("command,comment,block_needs", bash_commands(),
                         ids=[c[:60] for c, _, _ in bash_commands()])
def test_bash_example_runs_or_says_what_it_needs(command, comment, block_needs, tmp_path):
    if not _cheap(command):
        assert "needs" in comment or block_needs, f"README example neither cheap nor saying what it needs: {command}"
        return
    env = subprocess_env(BUILD_MATRIX_RUN_DIR=str(tmp_path / "matrix-run"))
    argv = shlex.split(command)
    if argv[0] == "python":
        argv[0] = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else "python3"
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"
    assert done.stdout.strip(), command
    if "--json" in argv:
        json.loads(done.stdout)  # one strict JSON object
    assert not (tmp_path / "matrix-run" / "matrix").exists()  # a cheap example built nothing


def _undefined_names(source: str) -> set[str]:
    tree = ast.parse(source)
    defined = set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            defined |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            defined.add(node.id)
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return used - defined


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_example_runs_or_says_what_it_needs(index, tmp_path, monkeypatch, toy_db, fast_report):
    source = blocks("python")[index]
    assert not _undefined_names(source), _undefined_names(source)
    if "build_matrix_runner(" not in source:
        assert "# needs" in source, f"README python example neither run here nor saying what it needs:\n{source}"
        imports = [ast.unparse(n) for n in ast.parse(source).body if isinstance(n, (ast.Import, ast.ImportFrom))]
        exec(compile("\n".join(imports), "README.md", "exec"), {})  # the names it imports exist
        return
    # the pipeline snippet, verbatim, on the toy simulator and the toy database (the seams), in a fresh directory
    from commands import MatrixRunner

    run = MatrixRunner.run

    def on_the_toy(self, ns):
        for name, value in (("simulator", TOY_SIM), ("db", str(toy_db)), ("workers", 1)):
            if not hasattr(ns, name):
                setattr(ns, name, value)
        return run(self, ns)

    monkeypatch.setattr(MatrixRunner, "run", on_the_toy)
    monkeypatch.chdir(tmp_path)
    exec(compile(source, "README.md", "exec"), {"__name__": "readme_example"})
    assert (tmp_path / "matrix-run" / "matrix" / "X.npz").is_file()
