"""The container image: the project synced with uv into its own venv, and that venv activated.

Upstream ran `uv sync` into `/root/policyengine-us-data/.venv` but left the container on the system
Python, so every function died at boot with `ModuleNotFoundError: pandas`. The fix is the `.env()`
step: `VIRTUAL_ENV`, `PATH` (venv `bin` first) and `PYTHONPATH` (the venv's site-packages, then the
project) point every process at the synced environment. A build-time check imports the stack with
the image's default `python` under that env, so an image that would not boot never deploys.

The settings are module constants so tests can check them without building anything.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import modal

PYTHON_VERSION = "3.11"
UV_VERSION = "0.13.8"
PROJECT_DIR = "/root/policyengine-us-data"
VENV_DIR = f"{PROJECT_DIR}/.venv"
SITE_PACKAGES = f"{VENV_DIR}/lib/python{PYTHON_VERSION}/site-packages"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Written out in full: Image.env() quotes values, so "$PATH" would not expand.
IMAGE_ENV: dict[str, str] = {
    "VIRTUAL_ENV": VENV_DIR,
    "PATH": f"{VENV_DIR}/bin:{SYSTEM_PATH}",
    "PYTHONPATH": f"{SITE_PACKAGES}:{PROJECT_DIR}",
    "UV_PROJECT_ENVIRONMENT": VENV_DIR,
    "PYTHONUNBUFFERED": "1",
}
# Build-time settings for `uv sync`: use the image's Python, never download one.
UV_BUILD_ENV: dict[str, str] = {
    "UV_PROJECT_ENVIRONMENT": VENV_DIR,
    "UV_PYTHON": f"/usr/local/bin/python{PYTHON_VERSION}",
    "UV_PYTHON_DOWNLOADS": "never",
    "UV_COMPILE_BYTECODE": "1",
    "UV_LINK_MODE": "copy",
}
LOCAL_PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROJECT_IGNORE = [
    ".venv",
    ".git",
    "**/__pycache__",
    "**/*.pyc",
    ".pytest_cache",
    ".hypothesis",
    "runs",
    "benchmarks/out",
    # run output and data never belong in the image: the default run directory, shards, datasets, packages
    "matrix-run",
    "**/matrix_chunks",
    "**/.runner",
    "**/*.npz",
    "**/*.h5",
    "**/*.pkl",
]
RUNNER_DIRNAME = ".runner"  # marks a run directory, wherever --run-dir put it
_FROZEN_IF_LOCKED = "$([ -f uv.lock ] && echo --frozen)"
DEPS_SYNC_COMMAND = f"cd {PROJECT_DIR} && uv sync --no-dev --no-install-project {_FROZEN_IF_LOCKED}"
PROJECT_SYNC_COMMAND = f"cd {PROJECT_DIR} && uv sync --no-dev {_FROZEN_IF_LOCKED}"
BOOT_CHECK_COMMAND = (
    "python -c \"import sys, numpy, scipy, h5py, policyengine_us_data; "
    f"assert sys.prefix == '{VENV_DIR}', sys.prefix\""
)


def project_ignore(project_root: str | Path = LOCAL_PROJECT_ROOT) -> Callable[[Path], bool]:
    """Exclude PROJECT_IGNORE and everything inside any run directory (a directory holding `.runner/`)."""
    root = Path(project_root)
    matcher = modal.FilePatternMatcher(*PROJECT_IGNORE)

    @functools.lru_cache(maxsize=None)
    def run_dir(rel_dir: Path) -> bool:
        return rel_dir != Path(".") and (root / rel_dir / RUNNER_DIRNAME).is_dir()

    def ignore(path: Path) -> bool:
        rel = path.relative_to(root) if path.is_absolute() else path
        return matcher(rel) or run_dir(rel) or any(run_dir(parent) for parent in rel.parents)

    return ignore


def build_image(project_root: str | Path = LOCAL_PROJECT_ROOT) -> modal.Image:
    """Debian slim + uv; dependencies synced first (cached layer), then the project, then activated."""
    root = Path(project_root)
    image = (
        modal.Image.debian_slim(python_version=PYTHON_VERSION)
        .pip_install(f"uv=={UV_VERSION}")
        .add_local_file(root / "pyproject.toml", f"{PROJECT_DIR}/pyproject.toml", copy=True)
    )
    if (root / "uv.lock").exists():
        image = image.add_local_file(root / "uv.lock", f"{PROJECT_DIR}/uv.lock", copy=True)
    return (
        image.run_commands(DEPS_SYNC_COMMAND, env=UV_BUILD_ENV)
        .add_local_dir(root, PROJECT_DIR, copy=True, ignore=project_ignore(root))
        .run_commands(PROJECT_SYNC_COMMAND, env=UV_BUILD_ENV)
        .env(IMAGE_ENV)
        .run_commands(BOOT_CHECK_COMMAND)
        .workdir(PROJECT_DIR)
    )


image = build_image()
