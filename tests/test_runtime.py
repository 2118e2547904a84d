"""The daemon lifecycle outside systemd, watched through a real sd_notify datagram socket."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemons.runtime.notify import Notifier
from tests.conftest import TEST_CONFIG
from tests.ports import free_ports


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(10)
        self.messages: list[str] = []

    def wait_for(self, needle: str) -> str:
        while True:
            msg = self.sock.recv(4096).decode()
            self.messages.append(msg)
            if needle in msg:
                return msg


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    config = tmp_path / "fleet.toml"
    bus_port, heartbeat_port = free_ports(2)
    config.write_text(TEST_CONFIG.replace('"/run/algo/bus.sock"', f'"{tmp_path}/bus.sock"')
                      .replace("metrics_port = 9470", f"metrics_port = {bus_port}")
                      .replace("metrics_port = 9471", f"metrics_port = {heartbeat_port}"))
    env = {**os.environ, "ALGO_CONFIG": str(config)}
    env.pop("NOTIFY_SOCKET", None)
    bus = subprocess.Popen([sys.executable, "-m", "daemons.bus"], env=env, stderr=subprocess.DEVNULL)
    yield config, env
    bus.terminate()
    bus.wait(10)


def test_ready_watchdog_reload_and_stop(fleet: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    _config, env = fleet
    notify = NotifySocket(tmp_path / "notify.sock")
    env = {**env, "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "200000"}
    proc = subprocess.Popen([sys.executable, "-m", "daemons.heartbeat"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        ready = notify.wait_for("READY=1")
        assert "STATUS=" in ready
        started = time.monotonic()
        notify.wait_for("WATCHDOG=1")
        notify.wait_for("WATCHDOG=1")
        assert time.monotonic() - started < 1.0  # every WATCHDOG_USEC/2 = 0.1s

        proc.send_signal(signal.SIGHUP)
        assert "RELOADING=1" in notify.wait_for("RELOADING=1")
        assert "READY=1" in notify.wait_for("READY=1")

        proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1")
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.wait()


def test_unhealthy_daemon_stops_feeding_the_watchdog(fleet: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    _config, env = fleet
    notify = NotifySocket(tmp_path / "notify.sock")
    env = {**env, "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "200000",
           "ALGO_BUS__SOCKET": str(tmp_path / "nobody-listens.sock")}
    proc = subprocess.Popen([sys.executable, "-m", "daemons.heartbeat"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        notify.wait_for("READY=1")
        notify.wait_for("UNHEALTHY: no heartbeat round trip")  # after max_bus_outage_sec (1.5s)
        notify.sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            notify.wait_for("WATCHDOG=1")
    finally:
        proc.kill()
        proc.wait()


def test_config_error_exits_78_and_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text("[daemons.heartbeat]\nmax_bus_outage_sec = 'soon'\n")
    result = subprocess.run([sys.executable, "-m", "daemons.heartbeat", "--config", str(config)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 78
    assert "daemons.heartbeat.max_bus_outage_sec" in result.stderr


def test_notify_socket_is_not_inherited_by_children(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "n.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    notifier = Notifier()
    assert notifier.enabled and notifier.watchdog_interval == 2.0
    child_env = subprocess.run(["env"], capture_output=True, text=True).stdout
    assert "NOTIFY_SOCKET" not in child_env and "WATCHDOG_USEC" not in child_env
