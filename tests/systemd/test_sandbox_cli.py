"""`algoctl sandbox` as a newcomer uses it: boot, run the fleet, look, tear down leaving nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemons.algoctl.sandbox import ACTIVE, _cgroup_dirs, _processes_in
from tests.conftest import REPO, require_systemd_sandbox
from tests.helpers import wait_until

pytestmark = pytest.mark.systemd


def algoctl(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemons.algoctl", "sandbox", "--root", str(root), *args],
        capture_output=True, text=True, timeout=120,
    )


def test_start_run_fleet_stop_leaves_nothing_behind(tmp_path: Path) -> None:
    require_systemd_sandbox()
    root = tmp_path / "box"
    cgroups_before = set(_cgroup_dirs())

    started = algoctl(root, "start", "--config", str(REPO / "configs" / "paper.toml"))
    assert started.returncode == 0, started.stderr
    try:
        _drive_and_stop(root, cgroups_before)
    finally:
        algoctl(root, "stop")  # a failed assertion must not leave the sandbox (and its lock) behind


def _drive_and_stop(root: Path, cgroups_before: set[Path]) -> None:
    pid = int((root / "pid").read_text())
    ns = os.readlink(f"/proc/{pid}/ns/pid")
    assert algoctl(root, "start").returncode == 1  # one sandbox at a time, with a clear reason

    assert algoctl(root, "systemctl", "start", "algo.target").returncode == 0
    wait_until(
        lambda: "active (running)" in algoctl(root, "systemctl", "status", "algo-heartbeat").stdout, 15,
        "the heartbeat to run",
    )
    status = algoctl(root, "status").stdout
    assert "algo-bus.service" in status and "algo-heartbeat.service" in status and "algo-bus.socket" in status
    log = algoctl(root, "journalctl", "-u", "algo-heartbeat", "-o", "cat").stdout
    assert "heartbeat ready: connected" in log
    assert len(list(_processes_in(ns))) >= 4  # systemd, journald, broker, heartbeat

    stopped = algoctl(root, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert list(_processes_in(ns)) == []
    assert not ACTIVE.exists()
    assert set(_cgroup_dirs()) == cgroups_before
    # The journal outlives the sandbox, readable from the host.
    persisted = subprocess.run(["journalctl", "-D", str(root / "journal"), "-u", "algo-bus", "-o", "cat"],
                               capture_output=True, text=True).stdout
    assert "bus listening on /run/algo/bus.sock (socket-activated)" in persisted
    assert algoctl(root, "status").returncode == 3
