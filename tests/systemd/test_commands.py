"""Acknowledged control-plane commands in the real fleet, one sandbox for the module: `algoctl strategy
... --wait` is carried out by the hosting unit and its outcome written back; a command submitted while its
engine is stopped runs once when it is back; parameters the strategy refuses fail with its reason and
change nothing; an own-process strategy is stopped and started through the queue (its unit changes), by
algo-unitctl, which starts nothing else."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest

from daemons.algoctl.sandbox import Sandbox
from tests.conftest import REPO, TEST_CONFIG, require_systemd_sandbox
from tests.helpers import wait_until
from tests.systemd.busclient import Listener
from tests.systemd.test_risk import tick

pytestmark = pytest.mark.systemd

ALGOCTL = sys.prefix + "/bin/algoctl"
MODEL = "algo-strategy@model-infy.service"
CONFIG = TEST_CONFIG + (
    '\n[[daemons.equity.strategies]]\nname = "model-infy"\nkind = "model"\nprocess = "own"\nmetrics_port = 9491\n'
    'params = { model = "/etc/algo/models/example.onnx", symbol = "INFY", quantity = 1, buy_above = 0.55, '
    'sell_below = 0.45 }\n\n[commander]\nlease_sec = 2\npoll_sec = 0.2\n')


@contextmanager
def command_fleet(root: Path) -> Iterator[Sandbox]:
    """The sandbox these tests drive, the console's too: CONFIG, algo-commander and the unit helper up, the
    registry seeded, algo-equity and the own-process model strategy running; no paper feed (the tests'
    ticks are the only ones; the engines would pull it in)."""
    sandbox = Sandbox(root / "sandbox")
    (root / "fleet.toml").write_text(CONFIG)
    sandbox.prepare(root / "fleet.toml")
    (sandbox.etc / "models").mkdir()
    shutil.copy(REPO / "configs" / "models" / "example.onnx", sandbox.etc / "models" / "example.onnx")
    sandbox.install_dropin("algo-marketdata.service", "off", "[Unit]\nConditionPathExists=/nonexistent\n")
    sandbox.start()
    try:
        sandbox.systemctl("start", "algo-commander.service", "algo-unitctl.socket", check=True)
        seeded = algoctl(sandbox, "config", "seed")
        assert seeded.returncode == 0, seeded.stderr
        sandbox.systemctl("start", "algo-equity.service", MODEL, check=True)
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    require_systemd_sandbox()
    with command_fleet(tmp_path_factory.mktemp("commands")) as sandbox:
        yield sandbox


def algoctl(box: Sandbox, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """As the fleet's user, who owns the control-plane database's files."""
    return box.run("runuser", "-u", box.user, "--", ALGOCTL, *args, timeout=timeout)


def rsi_entry_ticks(listener: Listener) -> None:
    """Up for 16 ticks, then down: RSI(14) crosses below 30, which is rsi-infy's entry (again on a second
    run: the fall is long enough to cross from where the first left it)."""
    for price in [1000 + i for i in range(16)] + [1015 - 2 * i for i in range(1, 40)]:
        listener.tick(tick("INFY", float(price)))


def entries(listener: Listener) -> list[str]:
    return [ev.payload["reason"] for _, ev in listener.events
            if ev.type == "strategy.signal" and ev.payload["strategy"] == "rsi-infy" and ev.payload["entry"]]


def executed_lines(box: Sandbox, unit: str, command_id: str) -> list[str]:
    out = box.journalctl("-u", unit, f"COMMAND_ID={command_id}", "-o", "cat").stdout.splitlines()
    return [line for line in out if line.endswith(")") and ": executed (" in line]


def test_a_pause_through_the_queue_is_executed_and_blocks_the_next_entry(box: Sandbox) -> None:
    with Listener(box, "strategy.signal") as listener:
        paused = algoctl(box, "strategy", "pause", "rsi-infy", "--id", "pause-1", "--wait", "10")
        assert paused.returncode == 0, paused.stdout + paused.stderr
        assert paused.stdout.splitlines()[-1].endswith("pause rsi-infy  by algo: executed")
        rsi_entry_ticks(listener)
        resumed = algoctl(box, "strategy", "resume", "rsi-infy", "--wait", "10")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert entries(listener) == []  # the crossing came while paused
        rsi_entry_ticks(listener)
        wait_until(lambda: entries(listener), 10, "an entry once resumed")
    line = box.journalctl("-u", "algo-equity.service", "COMMAND_ID=pause-1", "-o", "json").stdout.splitlines()
    fields = orjson.loads(line[-1])
    assert (fields["STRATEGY"], fields["ACTOR"], fields["MESSAGE"]) == (
        "rsi-infy", "algo", "pause rsi-infy by algo: executed (paused, rsi_reversion "
        "{'symbol': 'INFY', 'quantity': 10, 'period': 14, 'oversold': 30.0, 'exit_above': 55.0})")


def test_a_command_sent_while_its_engine_is_stopped_runs_once_when_it_is_back(box: Sandbox) -> None:
    box.systemctl("stop", "algo-equity.service", check=True)
    queued = algoctl(box, "strategy", "pause", "rsi-reliance", "--id", "while-down", "--wait", "5")
    assert queued.returncode == 75, queued.stdout + queued.stderr  # still pending: nobody to carry it out
    box.systemctl("start", "algo-equity.service", check=True)
    wait_until(lambda: "executed" in algoctl(box, "strategy", "history", "rsi-reliance", "--limit", "1").stdout, 15,
               "the command to be executed once algo-equity is back")
    assert len(executed_lines(box, "algo-equity.service", "while-down")) == 1
    wait_until(lambda: "(1 paused)" in box.show("algo-equity.service", "StatusText")["StatusText"], 5,
               "the status line to show the pause")
    sent = box.journalctl("-u", "algo-commander.service", "COMMAND_ID=while-down", "-o", "cat").stdout
    assert "pause rsi-reliance by algo sent to algo-equity" in sent and "sent again to algo-equity" in sent


def test_parameters_the_strategy_refuses_fail_with_its_reason_and_change_nothing(box: Sandbox) -> None:
    bad = algoctl(box, "strategy", "set", "model-infy", 'model="/etc/algo/models/missing.onnx"', "--wait", "15")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    last = bad.stdout.splitlines()[-1]
    assert ": failed (parameters rejected by the strategy: cannot start: " in last and "missing.onnx" in last
    listed = algoctl(box, "strategy", "list").stdout
    row = next(line for line in listed.splitlines() if line.startswith("model-infy "))
    assert '"/etc/algo/models/example.onnx"' in row and " 1  " in row  # version 1: nothing changed
    checkpoint = orjson.loads((box.state / "strategy-model-infy" / "checkpoint.json").read_bytes())
    assert "model-infy" not in checkpoint["params"]  # the process kept what it ran
    assert box.show(MODEL, "ActiveState")["ActiveState"] == "active"
    # pause and resume go over the bus to the process, like an engine
    assert algoctl(box, "strategy", "pause", "model-infy", "--wait", "10").returncode == 0
    wait_until(lambda: "(1 paused)" in box.show(MODEL, "StatusText")["StatusText"], 5, "the process's pause")
    assert algoctl(box, "strategy", "resume", "model-infy", "--wait", "10").returncode == 0


def test_an_own_process_strategy_stops_and_starts_through_the_queue(box: Sandbox) -> None:
    pid = box.show(MODEL, "MainPID")["MainPID"]
    stopped = algoctl(box, "strategy", "stop", "model-infy", "--wait", "30")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert box.show(MODEL, "ActiveState")["ActiveState"] == "inactive"
    started = algoctl(box, "strategy", "start", "model-infy", "--wait", "30")
    assert started.returncode == 0, started.stdout + started.stderr
    now = box.show(MODEL, "ActiveState", "MainPID")
    assert now["ActiveState"] == "active" and now["MainPID"] != pid
    audit = box.journalctl("-t", "algo-unitctl", "-o", "cat").stdout
    assert "algo-strategy@model-infy.service by algo: ok" in audit


CREATE = """
from daemons.control_plane.records import StrategySpec
from daemons.control_plane.store import Store
from daemons.runtime.config import load_config
store = Store.open(load_config("/etc/algo/fleet.toml").control_plane.database_url)
store.create(StrategySpec(name="rsi-infy-2", kind="rsi_reversion", engine="equity", process="engine",
                          params={"symbol": "INFY", "quantity": 3, "period": 14, "oversold": 30.0, "exit_above": 55.0},
                          desired_state="stopped", auto_start=False), "admin")
"""


def test_a_strategy_created_in_the_registry_runs_in_its_engine_and_outlives_its_restart(box: Sandbox) -> None:
    """What POST /strategies does (the registry only; fleet.toml never names it), then a start through the queue."""
    created = box.run("runuser", "-u", box.user, "--", sys.executable, "-c", CREATE)
    assert created.returncode == 0, created.stderr
    started = algoctl(box, "strategy", "start", "rsi-infy-2", "--wait", "10")
    assert started.returncode == 0, started.stdout + started.stderr
    box.systemctl("restart", "algo-equity.service", check=True)  # it builds rsi-infy-2 from its checkpoint
    with Listener(box, "strategy.signal") as listener:
        rsi_entry_ticks(listener)
        wait_until(lambda: [ev for _, ev in listener.events if ev.type == "strategy.signal"
                            and ev.payload["strategy"] == "rsi-infy-2" and ev.payload["entry"]], 10,
                   "an entry of the created strategy after algo-equity's restart")
    entry = next(ev.payload for _, ev in listener.events if ev.payload["strategy"] == "rsi-infy-2")
    assert (entry["symbol"], entry["quantity"], entry["engine"]) == ("INFY", 3, "equity")


@pytest.mark.parametrize("request_line", [
    b"start algo-bus\n", b"stop algo-risk\n", b"start rsi-infy\n", b"restart algo-strategy@model-infy.service\n",
    b"start ../../model-infy\n", b"reboot\n",
])
def test_the_helper_starts_nothing_but_own_process_strategies(box: Sandbox, request_line: bytes) -> None:
    before = {u: box.show(u, "ActiveState", "MainPID") for u in ("algo-bus.service", "algo-risk.service", MODEL)}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(box.path("/run/algo-unitctl.sock")))
        s.sendall(request_line)
        answer = s.makefile("rb").readline()
    assert answer.startswith(b"refused: "), answer
    assert {u: box.show(u, "ActiveState", "MainPID") for u in before} == before


def test_the_helpers_socket_is_root_and_the_fleets_group_only(box: Sandbox) -> None:
    st = Path(box.path("/run/algo-unitctl.sock")).stat()
    assert oct(st.st_mode & 0o777) == "0o660" and st.st_uid == 0
    nobody = box.run("runuser", "-u", "nobody", "--", sys.executable, "-c",
                     "import socket; socket.socket(socket.AF_UNIX).connect('/run/algo-unitctl.sock')")
    assert nobody.returncode != 0 and "PermissionError" in nobody.stderr
