"""`algoctl sandbox` from a wheel installed without the checkout (bootstrap.sh's venv for a checkout
under /root or /home, which `scripts/fleet-up.sh` runs): the sandbox boots with that venv's units and
configs, and the fleet's daemons run from it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_CONFIG, require_systemd_sandbox
from tests.installed import build_wheel, install_wheel

pytestmark = pytest.mark.systemd


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    require_systemd_sandbox()
    # Where the fleet's user can run it: beside the test venv, which the systemd tests already need
    # reachable (the units hide /tmp and /home; a mode-0700 directory shuts the user out).
    home = Path(tempfile.mkdtemp(prefix="wheel-test-", dir=sys.prefix))
    home.chmod(0o755)
    try:
        yield install_wheel(build_wheel(tmp_path_factory.mktemp("wheel")), home / "venv")
    finally:
        shutil.rmtree(home)


def algoctl(venv: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / "algoctl"), *args], capture_output=True, text=True, timeout=timeout,
                          check=False, cwd=venv)  # cwd: never the checkout's daemons


def test_algoctl_sandbox_from_an_installed_wheel_runs_the_fleet_from_it(venv: Path, tmp_path: Path) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text(TEST_CONFIG)
    root = str(tmp_path / "sandbox")
    started = algoctl(venv, "sandbox", "--root", root, "start", "--config", str(config))
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        up = algoctl(venv, "sandbox", "--root", root, "systemctl", "start", "algo-marketdata.service")
        assert up.returncode == 0, up.stdout + up.stderr
        show = algoctl(venv, "sandbox", "--root", root, "systemctl", "show", "algo-marketdata.service",
                       "algo-journal.service", "--property=ActiveState,ExecStart").stdout
        assert show.count("ActiveState=active") == 2, show  # the feed read the wheel's instruments dump
        assert f"path={venv}/bin/algo-marketdata " in show and f"path={venv}/bin/algo-journal " in show, show
    finally:
        stopped = algoctl(venv, "sandbox", "--root", root, "stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
