"""algo-bus binding its own socket (outside socket activation) replaces only a stale socket: a file,
a directory, a symlink, a FIFO or another broker's live socket at bus.socket is refused with exit 78."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemons.bus.listen import bind_socket
from daemons.runtime.config import ConfigError
from tests.conftest import TEST_CONFIG
from tests.ports import free_port

ALGO_BUS = Path(sys.executable).with_name("algo-bus")


def fleet_toml(tmp_path: Path, bus_socket: Path, name: str = "fleet.toml") -> Path:
    config = tmp_path / name
    config.write_text(TEST_CONFIG.replace('"/run/algo/bus.sock"', f'"{bus_socket}"')
                      .replace("9470", str(free_port())))
    return config


def algoctl_validate(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemons.algoctl", "config", "validate", str(config)],
                          check=False, capture_output=True, text=True, timeout=60)


def regular_file(p: Path) -> None:
    p.write_text("the operator's notes\n")


def directory(p: Path) -> None:
    p.mkdir()
    (p / "keep").write_text("x")


def symlink(p: Path) -> None:
    target = p.with_name("target.txt")
    target.write_text("x")
    p.symlink_to(target)


def fifo(p: Path) -> None:
    os.mkfifo(p)


HOSTILE: dict[str, Callable[[Path], None]] = {
    "a regular file": regular_file, "a directory": directory, "a symlink": symlink, "a FIFO": fifo,
}


def snapshot(p: Path) -> tuple[int, bytes]:
    st = p.lstat()
    content = p.read_bytes() if p.is_file() and not p.is_symlink() else b""
    return st.st_ino, content


@pytest.mark.parametrize("kind", HOSTILE)
def test_bind_socket_never_replaces_what_is_not_a_socket(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "bus.sock"
    HOSTILE[kind](path)
    before = snapshot(path)
    with pytest.raises(ConfigError) as err:
        bind_socket(path, "algo")
    assert [(p.path, p.message) for p in err.value.problems] == [
        ("bus.socket", f"{path} is {kind}, not a socket: algo-bus replaces only a stale socket")]
    assert snapshot(path) == before


def test_bind_socket_refuses_a_parent_that_is_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "run").write_text("x")
    with pytest.raises(ConfigError) as err:
        bind_socket(tmp_path / "run" / "algo" / "bus.sock", "algo")
    assert str(err.value.problems[0]) == f"bus.socket: {tmp_path}/run/algo/bus.sock: {tmp_path}/run is not a directory"


def test_a_stale_socket_is_replaced_and_a_live_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / "bus.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # a broker that died without removing its socket
    dead.close()
    live = bind_socket(path, "algo")
    try:
        with pytest.raises(ConfigError) as err:
            bind_socket(path, "algo")
        assert str(err.value.problems[0]) == (
            f"bus.socket: another process is listening on {path}: stop it, or give this one another bus.socket")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as peer:
            peer.connect(str(path))  # still the first broker's socket
    finally:
        live.close()


def test_a_missing_socket_directory_is_created(tmp_path: Path) -> None:
    bind_socket(tmp_path / "run" / "algo" / "bus.sock", "algo").close()
    assert (tmp_path / "run" / "algo" / "bus.sock").is_socket()


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(("ERROR", "CRITICAL"))]


@pytest.mark.parametrize("kind", HOSTILE)
def test_algo_bus_exits_78_naming_the_path_and_leaves_it_alone(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "bus.sock"
    HOSTILE[kind](path)
    before = snapshot(path)
    result = subprocess.run([str(ALGO_BUS), "--config", str(fleet_toml(tmp_path, path))],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 78, result.stderr
    assert "Traceback" not in result.stderr
    [line] = error_lines(result.stderr)
    assert f"{path} is {kind}, not a socket" in line and "bus.socket" in line
    assert snapshot(path) == before


@pytest.fixture
def running_broker(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "bus.sock"
    proc = subprocess.Popen([str(ALGO_BUS), "--config", str(fleet_toml(tmp_path, path, "first.toml"))],
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not path.is_socket():
            assert proc.poll() is None and time.monotonic() < deadline, "the first broker did not start"
            time.sleep(0.05)
        yield path
    finally:
        proc.terminate()
        proc.wait(10)


def test_algo_bus_does_not_steal_a_live_brokers_socket(running_broker: Path, tmp_path: Path) -> None:
    inode = running_broker.stat().st_ino
    result = subprocess.run([str(ALGO_BUS), "--config", str(fleet_toml(tmp_path, running_broker))],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 78, result.stderr
    assert "Traceback" not in result.stderr
    [line] = error_lines(result.stderr)
    assert f"another process is listening on {running_broker}" in line
    assert running_broker.stat().st_ino == inode
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as peer:
        peer.connect(str(running_broker))


@pytest.mark.parametrize("kind", HOSTILE)
def test_validate_refuses_a_bus_socket_that_is_not_a_socket(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "bus.sock"
    HOSTILE[kind](path)
    result = algoctl_validate(fleet_toml(tmp_path, path))
    assert result.returncode == 78
    assert f"  bus.socket: {path} is {kind}, not a socket" in result.stderr


def test_validate_refuses_a_socket_directory_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "run").write_text("x")
    result = algoctl_validate(fleet_toml(tmp_path, tmp_path / "run" / "algo" / "bus.sock"))
    assert result.returncode == 78
    assert f"  bus.socket: {tmp_path}/run/algo/bus.sock: {tmp_path}/run is not a directory" in result.stderr


def test_validate_accepts_a_running_fleets_socket_and_a_host_without_one_yet(running_broker: Path,
                                                                            tmp_path: Path) -> None:
    assert algoctl_validate(fleet_toml(tmp_path, running_broker)).returncode == 0
    fresh = algoctl_validate(fleet_toml(tmp_path, tmp_path / "not-yet" / "algo" / "bus.sock"))
    assert fresh.returncode == 0, fresh.stderr
