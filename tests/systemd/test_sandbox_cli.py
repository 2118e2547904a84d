"""`algoctl sandbox` as a newcomer uses it: boot, run the fleet, look, tear down leaving nothing; and a
sandbox in cgroups of its own running beside it, as scripts/test.sh's two systemd streams do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemons.algoctl.sandbox import ACTIVE, OWN_CGROUPS, Sandbox, _cgroup_dirs, _processes_in, own_cgroup_dirs
from tests.conftest import REPO, require_systemd_sandbox
from tests.helpers import wait_until
from tests.systemd.netns import loopback_only

pytestmark = pytest.mark.systemd
BESIDE = "algo-test-beside"  # the sandbox beside the shared one: its network namespace and cgroup subtree


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


def test_a_sandbox_with_cgroups_of_its_own_is_neither_counted_nor_removed_by_a_shared_one(tmp_path: Path) -> None:
    require_systemd_sandbox()
    beside = Sandbox(tmp_path / "beside", cgroup=BESIDE, netns=BESIDE)  # its fleet's ports are its own
    shared = Sandbox(tmp_path / "shared")
    for box in (beside, shared):
        box.prepare(REPO / "configs" / "paper.toml")
    before = set(_cgroup_dirs())
    with loopback_only(BESIDE):
        beside.start()  # first: it is the one that made any missing mount point, and it stops last
        try:
            assert beside.systemctl("start", "algo-heartbeat.service").returncode == 0
            shared.start()
            try:
                assert shared.systemctl("start", "algo-heartbeat.service").returncode == 0
                its_own = own_dirs(BESIDE)
            finally:
                shared.stop()
            assert set(_cgroup_dirs()) == before  # the other's subtree is not the shared one's
            assert own_dirs(BESIDE) == its_own  # nor removed by its stop
            assert any(p.name == "algo-heartbeat.service" for p in its_own)
            assert beside.show("algo-heartbeat.service", "ActiveState")["ActiveState"] == "active"
        finally:
            beside.stop()
    assert not any(h.path.exists() for h in own_cgroup_dirs(BESIDE))
    assert not (OWN_CGROUPS / BESIDE).exists()


def own_dirs(name: str) -> set[Path]:
    return {Path(d) for h in own_cgroup_dirs(name) for d, _, _ in os.walk(h.path)}
