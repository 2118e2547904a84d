"""The project as a host without the checkout gets it: a wheel, installed (not editable) into a venv
of its own, as the Ansible role and bootstrap.sh's copy for a checkout under /root or /home do.

The wheel is built offline from a snapshot of the checkout (the build writes build/ and *.egg-info
next to its sources) with the test venv's setuptools. The new venv borrows the test venv's
dependencies through a .pth line instead of installing them again; its own site-packages comes
first, so ``daemons`` is the wheel's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.conftest import REPO

NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "build", "dist", ".ansible", "__pycache__", ".pytest_cache",
                                     "*.egg-info")


def _run(*cmd: str | Path) -> None:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, check=False,
                          preexec_fn=lambda: os.umask(0o022))  # the fleet's user must read the venv
    assert done.returncode == 0, f"{cmd}: {done.stdout[-3000:]}{done.stderr[-3000:]}"


def build_wheel(scratch: Path) -> Path:
    """algo_fleet-*.whl built from a snapshot of the checkout, offline."""
    source = scratch / "source"
    shutil.copytree(REPO, source, symlinks=True, ignore=NOT_SOURCES)
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "-q", "--wheel-dir", scratch / "wheels", source)
    (wheel,) = (scratch / "wheels").glob("algo_fleet-*.whl")
    return wheel


def install_wheel(wheel: Path, venv: Path) -> Path:
    """A new venv at ``venv`` with the wheel installed (not editable); returns it."""
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    _run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", "--no-index",
         "--disable-pip-version-check", "-q", wheel)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = subprocess.run([str(venv / "bin" / "python"), "-c", purelib], capture_output=True, text=True,
                          check=True).stdout.strip()
    (Path(site) / "algo-fleet-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv
