"""The command lines' process behaviour: log levels, --version without heavy imports, a prompt exit,
and outputs that respect the umask."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from policyengine_us_data.utils.atomic import atomic_write_bytes
from policyengine_us_data.utils.cli_process import configure_logging, verbosity_from

REPO = Path(__file__).resolve().parents[3]


def _python(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_verbosity_flags_are_taken_out_of_argv():
    assert verbosity_from(["-q", "--to", "x", "-v", "-v"]) == (1, ["--to", "x"])
    assert verbosity_from(["--quiet"]) == (-1, [])


@pytest.mark.parametrize("verbosity, own, third_party", [(-1, logging.WARNING, logging.WARNING),
                                                          (0, logging.INFO, logging.WARNING),
                                                          (1, logging.DEBUG, logging.INFO)])
def test_third_party_chatter_is_off_unless_verbose(verbosity, own, third_party):
    code = (
        "import logging\n"
        "from policyengine_us_data.utils.cli_process import configure_logging\n"
        f"configure_logging({verbosity})\n"
        "print(logging.getLogger('policyengine_us_data.x').getEffectiveLevel(),"
        " logging.getLogger('numexpr.utils').getEffectiveLevel())\n"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(own), str(third_party)]


def test_a_callers_own_logging_setup_is_left_alone(monkeypatch):
    root = logging.getLogger()
    handler = logging.NullHandler()
    monkeypatch.setattr(root, "handlers", [handler])
    before = logging.getLogger("policyengine_us_data").level
    configure_logging(-1)
    assert root.handlers == [handler]
    assert logging.getLogger("policyengine_us_data").level == before


@pytest.mark.parametrize("module", ["commands.cli", "policyengine_us_data.calibration.unified_calibration"])
def test_version_names_the_simulation_packages_without_importing_them(module):
    code = (
        "import sys\n"
        f"from {module} import main\n"
        "try:\n"
        "    code = main(['--version'])\n"
        "except SystemExit as exc:  # argparse's version action\n"
        "    code = exc.code\n"
        "print('policyengine_us' in sys.modules, code)\n"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert "policyengine-us 2.68" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "False 0"


def test_the_entry_point_exits_without_waiting_for_interpreter_teardown():
    """A slow teardown (here a 60 s exit handler; in a real build, the frozen policyengine-us heap)
    must not hold the prompt: the command-line entry flushes and leaves with its exit code."""
    code = (
        "import atexit, time\n"
        "from policyengine_us_data.utils.cli_process import exit_now\n"
        "atexit.register(time.sleep, 60)\n"
        "print('built', flush=False)\n"
        "exit_now(3)\n"
    )
    started = time.monotonic()
    result = _python(code, timeout=50)
    assert time.monotonic() - started < 40
    assert result.returncode == 3
    assert result.stdout == "built\n"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_are_created_with_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "out.bin", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.bin").stat().st_mode) == mode
