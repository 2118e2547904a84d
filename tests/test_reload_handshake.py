"""algo-reload (every unit's ExecReload=) returns once the daemon has applied the config, and fails with the
daemon's reasons when it refused it: against a real algo-bus process, and against processes that die, hang or
ignore the signal."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemons.runtime.config import load_config
from daemons.runtime.daemon import Daemon, Runner
from daemons.runtime.metrics import DaemonMetrics
from daemons.runtime.notify import Notifier
from daemons.runtime.reload_handshake import OUTCOME, Handshake, request_reload
from tests.test_bus_socket_path import fleet_toml

ALGO_RELOAD = Path(sys.executable).with_name("algo-reload")
ALGO_BUS = Path(sys.executable).with_name("algo-bus")


def algo_reload(pid: int, runtime: Path | None, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RUNTIME_DIRECTORY"}
    if runtime is not None:
        env["RUNTIME_DIRECTORY"] = str(runtime)
    return subprocess.run([str(ALGO_RELOAD), str(pid), *extra], env=env, check=False, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path, Path]]:
    """A real algo-bus with a runtime directory, as systemd starts it: (process, its config, the directory)."""
    runtime = tmp_path / "run"
    runtime.mkdir()
    socket = tmp_path / "bus.sock"
    config = fleet_toml(tmp_path, socket)
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"} | {"RUNTIME_DIRECTORY": str(runtime)}
    proc = subprocess.Popen([str(ALGO_BUS), "--config", str(config)], env=env, stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 20
        while not socket.is_socket():
            assert proc.poll() is None and time.monotonic() < deadline, "algo-bus did not start"
            time.sleep(0.05)
        yield proc, config, runtime
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_good_config_is_applied_before_algo_reload_returns(broker: tuple[subprocess.Popen[str], Path, Path]) -> None:
    proc, _config, runtime = broker
    result = algo_reload(proc.pid, runtime)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "algo-reload: applied\n"
    assert proc.poll() is None


def test_a_refused_config_fails_the_reload_with_the_daemons_reasons_and_the_daemon_runs_on(
        broker: tuple[subprocess.Popen[str], Path, Path]) -> None:
    proc, config, runtime = broker
    good = config.read_text()
    config.write_text(good.replace("interval_sec = 0.1", "interval_sec = 'fast'", 1))
    result = algo_reload(proc.pid, runtime)
    assert result.returncode == 1
    assert result.stderr.startswith("algo-reload: refused, the running config is kept:\n")
    assert f"{config}: daemons.heartbeat.interval_sec" in result.stderr
    assert proc.poll() is None
    config.write_text(good)
    assert algo_reload(proc.pid, runtime).returncode == 0  # mended: the next reload applies


def test_a_process_that_dies_of_the_signal_fails_the_reload(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "30"])  # SIGHUP's default action ends it
    try:
        result = algo_reload(sleeper.pid, tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert result.returncode == 1
    assert result.stderr in (f"algo-reload: process {sleeper.pid} ended during the reload\n",
                             f"algo-reload: process {sleeper.pid} is not running\n")


def test_a_process_that_never_answers_fails_the_reload_after_the_timeout(tmp_path: Path) -> None:
    deaf = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGHUP, signal.SIG_IGN);"
                             " print('ready', flush=True); time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    try:
        assert deaf.stdout is not None and deaf.stdout.readline() == "ready\n"
        started = time.monotonic()
        result = algo_reload(deaf.pid, tmp_path, "--timeout", "0.3")
        assert time.monotonic() - started < 10
        assert deaf.poll() is None
    finally:
        deaf.kill()
        deaf.wait()
    assert result.returncode == 1
    assert "no outcome from process" in result.stderr and "within 0.3s" in result.stderr


def test_a_gone_process_and_a_bad_pid_are_refused(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert request_reload(gone.pid, tmp_path, 1.0) == (False, f"process {gone.pid} is not running")
    result = algo_reload(0, tmp_path)
    assert result.returncode == 2 and "pid must be a process id, not 0" in result.stderr


def test_without_a_runtime_directory_it_only_signals(tmp_path: Path) -> None:
    deaf = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGHUP, signal.SIG_IGN);"
                             " print('ready', flush=True); time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    try:
        assert deaf.stdout is not None and deaf.stdout.readline() == "ready\n"
        result = algo_reload(deaf.pid, None)
    finally:
        deaf.kill()
        deaf.wait()
    assert result.returncode == 0 and "not waiting" in result.stdout


def test_a_runtime_directory_it_cannot_write_still_reloads_unheard(
        broker: tuple[subprocess.Popen[str], Path, Path], tmp_path: Path) -> None:
    proc, config, runtime = broker
    good = config.read_text()
    config.write_text(good.replace("interval_sec = 0.1", "interval_sec = 'fast'", 1))
    result = algo_reload(proc.pid, tmp_path / "gone")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"algo-reload: signalled; cannot leave a token in {tmp_path / 'gone'} (")
    assert "not waiting for the outcome" in result.stdout
    # The daemon got the signal all the same, found no token, refused the file and said so where it could
    deadline = time.monotonic() + 10
    while not (runtime / OUTCOME).exists():
        assert time.monotonic() < deadline, "no reload seen"
        time.sleep(0.02)
    outcome = json.loads((runtime / OUTCOME).read_text())
    assert outcome["token"] == "" and outcome["applied"] is False
    assert proc.poll() is None


class Plain(Daemon):
    """A daemon with the default reload hook (adopt the new config)."""

    name = "heartbeat"
    uses_bus = False

    async def run(self) -> None:
        await self.stopping.wait()

    def status(self) -> str:
        return f"every {self.config.daemons.heartbeat.interval_sec:g}s"


class Broken(Plain):
    """A daemon whose reload hook has a bug."""

    async def reload(self, config: object) -> None:
        raise KeyError("no such strategy")

    def status(self) -> str:
        return "broken"


def test_a_refused_file_is_flagged_until_a_reload_applies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """algo_config_reload_refused (ConfigReloadRefused): the file on disk is not what runs, and a restart would
    exit 78."""
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path))
    config = tmp_path / "fleet.toml"
    config.write_text("[daemons.heartbeat]\ninterval_sec = 0.5\n")
    daemon = Plain(load_config(config), DaemonMetrics("heartbeat"))
    runner = Runner(daemon, Notifier(), str(config))

    def refused() -> float | None:
        return daemon.metrics.registry.get_sample_value("algo_config_reload_refused")

    assert refused() == 0
    config.write_text("[daemons.heartbeat]\ninterval_sec = 'fast'\n")
    (tmp_path / "reload.request").write_text("one")
    asyncio.run(runner.reload())
    assert refused() == 1 and daemon.status() == "every 0.5s"
    assert runner.notifier.last_status.startswith("CONFIG REFUSED at the last reload")
    outcome = json.loads((tmp_path / OUTCOME).read_text())
    assert outcome["token"] == "one" and outcome["applied"] is False
    assert outcome["problems"][0].startswith(f"{config}: daemons.heartbeat.interval_sec: ")
    config.write_text("[daemons.heartbeat]\ninterval_sec = 0.25\n")
    (tmp_path / "reload.request").write_text("two")
    asyncio.run(runner.reload())
    assert refused() == 0 and runner.notifier.last_status == "every 0.25s"
    assert json.loads((tmp_path / OUTCOME).read_text()) == {"token": "two", "applied": True, "problems": []}


def test_a_reload_hook_that_raises_is_reported_and_the_daemon_is_ready_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path))
    config = tmp_path / "fleet.toml"
    config.write_text("")
    daemon = Broken(load_config(config), DaemonMetrics("heartbeat"))
    notifier = Notifier()
    runner = Runner(daemon, notifier, str(config))
    (tmp_path / "reload.request").write_text("t0ken")
    asyncio.run(runner.reload())
    # READY=1 was sent again, and the status line says the file is not what runs
    assert notifier.last_status == ("CONFIG REFUSED at the last reload, the previous one runs (journalctl -p err); "
                                    "broken")
    assert daemon.metrics.registry.get_sample_value("algo_config_reloads_total", {"result": "failed"}) == 1
    assert daemon.metrics.registry.get_sample_value("algo_config_reload_refused") == 1
    assert "heartbeat failed to apply the reloaded config" in caplog.text and "KeyError" in caplog.text
    assert (tmp_path / OUTCOME).read_text() == (
        '{"token": "t0ken", "applied": false, "problems": ["applying it failed: KeyError(\'no such strategy\'); '
        'see the journal"]}')


def test_an_outcome_that_cannot_be_written_is_logged_not_raised(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    Handshake(tmp_path / "gone").answer("t0ken", [])
    assert "could not record the reload's outcome" in caplog.text
