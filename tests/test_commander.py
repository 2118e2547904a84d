"""algo-commander with the real store (SQLite) and a real engine daemon in-process, the bus between them a
direct hand-over that can be cut (the engine down): commands are executed and written back, a command for a
down engine waits for its lease and runs once when the engine is back, the engine's refusal is written back
with its reason; own-process start/stop goes through the helper's real socket protocol; and the helper
starts nothing but algo-strategy@ units of own-process strategies."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daemons.commander.main import CommanderDaemon, hosted_engines
from daemons.control_plane import store as store_module
from daemons.control_plane.drift import declared
from daemons.control_plane.records import StrategySpec
from daemons.control_plane.store import Store
from daemons.engine.main import EquityEngine
from daemons.runtime.config import FleetConfig, load_config
from daemons.runtime.envelope import CONTROL_COMMAND, CONTROL_RESULT, Event
from daemons.runtime.metrics import DaemonMetrics
from daemons.unitctl import main as unitctl
from daemons.unitctl.protocol import Refused, own_strategies, parse
from tests.conftest import REPO

OWN = 'name = "rsi-reliance"\nkind = "rsi_reversion"\nprocess = "own"\nmetrics_port = 9490'


class Fleet:
    """A commander, the equity engine and the store, on one event loop; ``engine_up`` cuts the bus to the engine."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        text = (REPO / "configs" / "paper.toml").read_text().replace(
            'name = "rsi-reliance"\nkind = "rsi_reversion"', OWN).replace(
            "sqlite:////var/lib/algo/control/control.db", f"sqlite:///{tmp_path}/control.db")
        text += (f'\n[commander]\nunitctl_socket = "{tmp_path}/unitctl.sock"\nlease_sec = 10\n')
        (tmp_path / "fleet.toml").write_text(text)
        monkeypatch.setenv("ALGO_CONFIG", str(tmp_path / "fleet.toml"))
        monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
        self.config: FleetConfig = load_config(tmp_path / "fleet.toml")
        self.store = Store.open(self.config.control_plane.database_url, migrate=True)
        self.store.seed(declared(self.config), "deploy")
        self.engine = EquityEngine(self.config, DaemonMetrics("equity"))
        self.monkeypatch = monkeypatch
        self.commander = self.new_commander()
        self.engine_up = True
        self.to_engine: list[dict[str, Any]] = []
        self.now = datetime.now(UTC)
        monkeypatch.setattr(store_module, "_now", lambda: self.now)
        monkeypatch.setattr(self.engine.bus, "publish", self._engine_publishes)

    def new_commander(self) -> CommanderDaemon:
        """A commander, as after a restart: nothing in memory, the queue in the database."""
        commander = CommanderDaemon(self.config, DaemonMetrics("commander"))
        self.monkeypatch.setattr(commander.bus, "publish", self._commander_publishes)
        return commander

    def _commander_publishes(self, topic: str, payload: dict[str, Any], **_: Any) -> None:
        assert topic == CONTROL_COMMAND
        self.to_engine.append(payload)
        if self.engine_up:
            self.engine._on_control(Event(topic, "commander", 1, payload, "e", 1, "t"))

    def _engine_publishes(self, topic: str, payload: dict[str, Any], **_: Any) -> None:
        if topic == CONTROL_RESULT:
            self.commander._on_result(Event(topic, "equity", 1, payload, "r", 1, "t"))

    async def poll(self) -> None:
        await self.commander._poll()
        while self.commander._tasks:
            await asyncio.gather(*self.commander._tasks)

    def run(self, *steps: Any) -> None:
        async def go() -> None:
            for step in steps:
                if callable(step):
                    step()
                else:
                    await self.poll()
        asyncio.run(go())

    def later(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def count(self, verb: str, outcome: str) -> float | None:
        return self.commander.metrics.registry.get_sample_value("algo_commander_commands_total",
                                                                {"verb": verb, "outcome": outcome})


POLL = object()


def status(fleet: Fleet, command_id: str) -> str:
    command = fleet.store.command(command_id)
    assert command is not None
    return command.status


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    f = Fleet(tmp_path, monkeypatch)
    try:
        yield f
    finally:
        f.store.close()


def test_a_pause_is_executed_by_the_engine_and_written_back(fleet: Fleet) -> None:
    fleet.store.submit("c1", "rsi-infy", "pause", {}, "asha")
    fleet.run(POLL)
    done = fleet.store.command("c1")
    assert done is not None and (done.status, done.reason) == ("executed", None)
    assert fleet.engine.paused == {"rsi-infy"}
    strategy = fleet.store.strategy("rsi-infy")
    assert strategy is not None and strategy.desired_state == "paused"
    assert fleet.to_engine == [{"command_id": "c1", "verb": "pause", "strategy": "rsi-infy", "args": {},
                                "actor": "asha", "unit": "algo-equity", "kind": "rsi_reversion",
                                "params": {"symbol": "INFY", "quantity": 10, "period": 14, "oversold": 30.0,
                                           "exit_above": 55.0}}]
    assert fleet.count("pause", "executed") == 1


def test_a_strategy_created_in_the_registry_runs_in_its_engine_when_started(fleet: Fleet) -> None:
    """POST /strategies writes only the registry (fleet.toml does not name it): the start carries the
    registry's kind and parameters to the engine, which builds it; a parameter change and a pause reach it."""
    spec = StrategySpec(name="rsi-tcs", kind="rsi_reversion", engine="equity", process="engine",
                        params={"symbol": "TCS", "quantity": 4, "period": 14, "oversold": 30.0, "exit_above": 55.0},
                        desired_state="stopped", auto_start=False)
    fleet.store.create(spec, "root")
    fleet.store.submit("c1", "rsi-tcs", "start", {}, "asha")
    fleet.run(POLL)
    fleet.store.submit("c2", "rsi-tcs", "update_config", {"params": {"quantity": 6}}, "asha")
    fleet.store.submit("c3", "rsi-tcs", "pause", {}, "asha")
    fleet.run(POLL, POLL)
    assert [status(fleet, c) for c in ("c1", "c2", "c3")] == ["executed"] * 3
    built = fleet.engine.strategies["rsi-tcs"]
    assert (built.kind, built.params["symbol"], built.params["quantity"]) == ("rsi_reversion", "TCS", 6)
    assert fleet.engine.paused == {"rsi-tcs"} and "2 strategies (1 paused)" in fleet.engine.status()


def test_another_host_s_commander_leaves_the_command_to_the_host_that_runs_its_engine(
        fleet: Fleet, tmp_path: Path) -> None:
    """Two hosts share the queue: one runs only algo-fno, so its commander takes fno's commands alone; the
    equity command waits for the commander of the host running algo-equity (this fleet's)."""
    other = tmp_path / "fno-host.toml"
    text = (tmp_path / "fleet.toml").read_text()
    other.write_text(re.sub(r'(?m)^daemons = \[\] .*$', 'daemons = ["bus", "heartbeat", "fno"]',
                            re.sub(r'(?m)^host = "" .*$', 'host = "fno-host"', text)))
    fno_host = CommanderDaemon(load_config(other), DaemonMetrics("commander"))
    assert hosted_engines(fno_host.config) == frozenset({"fno"}) and hosted_engines(fleet.config) is None
    sent: list[dict[str, Any]] = []
    fleet.monkeypatch.setattr(fno_host.bus, "publish", lambda topic, payload, **_: sent.append(payload))
    fleet.store.submit("c1", "rsi-infy", "pause", {}, "asha")
    fleet.store.submit("c2", "ema-nifty", "pause", {}, "asha")
    asyncio.run(fno_host._poll())
    assert [p["command_id"] for p in sent] == ["c2"]  # fno's; equity's is not this host's
    assert status(fleet, "c1") == "pending" and fleet.to_engine == []
    fleet.run(POLL)
    assert status(fleet, "c1") == "executed" and fleet.engine.paused == {"rsi-infy"}
    if fno_host.store is not None:
        fno_host.store.close()


def test_a_command_for_a_down_engine_waits_for_its_lease_and_runs_once_when_it_is_back(fleet: Fleet) -> None:
    fleet.engine_up = False
    fleet.store.submit("c1", "rsi-infy", "pause", {}, "asha")
    fleet.store.submit("c2", "rsi-infy", "resume", {}, "asha")
    fleet.run(POLL, lambda: fleet.later(5), POLL)
    assert [p["command_id"] for p in fleet.to_engine] == ["c1"]  # within the lease: not sent again; c2 waits behind
    first = fleet.store.command("c1")
    assert first is not None and first.status == "pending"

    def back() -> None:
        fleet.later(6)  # past the lease
        fleet.engine_up = True
    fleet.run(back, POLL, POLL)
    assert [p["command_id"] for p in fleet.to_engine] == ["c1", "c1", "c2"]
    assert [(c.id, c.status) for c in fleet.store.history("rsi-infy")] == [("c2", "executed"), ("c1", "executed")]
    assert fleet.engine.paused == set()
    assert fleet.engine.metrics.registry.get_sample_value(
        "algo_engine_commands_total", {"verb": "pause", "outcome": "executed"}) == 1
    assert fleet.commander.metrics.registry.get_sample_value("algo_commander_resent_total") == 1


def test_a_command_in_flight_when_the_commander_restarts_is_taken_over_and_runs_once(fleet: Fleet) -> None:
    fleet.store.submit("c1", "rsi-infy", "stop", {}, "asha")
    fleet.run(POLL)
    assert status(fleet, "c1") == "executed"
    fleet.store.submit("c2", "rsi-infy", "start", {}, "asha")

    def answer_lost() -> None:  # the engine applies it, the commander dies before the answer is written back
        fleet.monkeypatch.setattr(fleet.commander, "_on_result", lambda event: None)
    fleet.run(answer_lost, POLL)
    assert "rsi-infy" in fleet.engine.strategies and status(fleet, "c2") == "pending"

    def restarted() -> None:
        fleet.commander = fleet.new_commander()
        fleet.later(11)
    fleet.run(restarted, POLL)
    assert status(fleet, "c2") == "executed"
    assert fleet.engine.metrics.registry.get_sample_value(
        "algo_engine_commands_total", {"verb": "start", "outcome": "repeated"}) == 1


def test_a_damaged_command_row_holds_the_queue_with_the_reason_and_the_commander_stays_up(fleet: Fleet) -> None:
    """A row the store cannot read is reported as the database failing (the gauge at 0, one error line naming
    the row), not a crash; once repaired, the command runs."""
    fleet.store.submit("c1", "rsi-infy", "pause", {}, "alice")
    with fleet.store.db.transaction() as tx:
        tx.rows("UPDATE commands SET args = '[1,' WHERE id = 'c1'")
    fleet.run(POLL)
    assert up(fleet) == 0
    assert "commands 'c1'" in (fleet.commander.database_error or "") and status_raw(fleet, "c1") == "pending"
    with fleet.store.db.transaction() as tx:
        tx.rows("UPDATE commands SET args = '{}' WHERE id = 'c1'")
    fleet.run(POLL)
    assert up(fleet) == 1 and fleet.commander.database_error is None
    assert status(fleet, "c1") == "executed" and fleet.engine.paused == {"rsi-infy"}


def up(fleet: Fleet) -> float | None:
    return fleet.commander.metrics.registry.get_sample_value("algo_commander_database_up")


def status_raw(fleet: Fleet, command_id: str) -> str:
    """A command's status read past its other columns (which may be the damaged ones)."""
    with fleet.store.db.transaction() as tx:
        found = tx.one("SELECT status FROM commands WHERE id = ?", command_id)
    assert found is not None
    return str(found[0])


def test_the_engines_refusal_is_written_back_with_its_reason(fleet: Fleet) -> None:
    # the registry accepts it (by its copy of the parameters, oversold is 30); the engine's strategy runs
    # with oversold 60 (a fleet.toml edit not yet seeded), and the strategy refuses the merge
    fleet.engine.strategies["rsi-infy"].params["oversold"] = 60.0
    fleet.store.submit("c1", "rsi-infy", "update_config", {"params": {"exit_above": 50.0}}, "asha")
    fleet.run(POLL)
    done = fleet.store.command("c1")
    assert done is not None and done.status == "failed"
    assert done.reason == "parameters rejected by the strategy: need 0 < oversold < exit_above < 100, got 60.0 and 50.0"
    strategy = fleet.store.strategy("rsi-infy")
    assert strategy is not None and strategy.version == 1 and "exit_above" in strategy.params
    assert strategy.params["exit_above"] == 55.0
    assert fleet.count("update_config", "failed") == 1


class Helper:
    """algo-unitctl's connection handler on a real Unix socket, systemctl replaced by a recorder."""

    def __init__(self, path: Path, monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

        def systemctl(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
            self.calls.append(argv)
            return subprocess.CompletedProcess(argv, 1 if self.fail else 0, "",
                                               "Job failed. See journalctl -xe" if self.fail else "")
        monkeypatch.setattr(subprocess, "run", systemctl)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                unitctl.serve(conn)

    def close(self) -> None:
        self.listener.close()


def test_own_process_start_and_stop_go_through_the_helper(fleet: Fleet, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    helper = Helper(tmp_path / "unitctl.sock", monkeypatch)
    try:
        fleet.store.submit("s1", "rsi-reliance", "stop", {}, "asha")
        fleet.run(POLL)
        fleet.store.submit("s2", "rsi-reliance", "update_config", {"params": {"quantity": 20}}, "asha")
        fleet.store.submit("s3", "rsi-reliance", "start", {}, "asha")
        fleet.run(POLL)
    finally:
        helper.close()
    assert [c[1:] for c in helper.calls] == [["--no-ask-password", "stop", "algo-strategy@rsi-reliance.service"],
                                             ["--no-ask-password", "start", "algo-strategy@rsi-reliance.service"]]
    assert [(c.id, c.status) for c in fleet.store.history("rsi-reliance")] == [
        ("s3", "pending"), ("s2", "executed"), ("s1", "executed")]
    # the start went on to the process (not running here): it confirms the registry's parameters
    assert fleet.to_engine[-1]["unit"] == "algo-strategy@rsi-reliance" and fleet.to_engine[-1]["params"]["quantity"] == 20


def test_a_unit_that_fails_to_start_fails_the_command_with_the_reason(fleet: Fleet, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    helper = Helper(tmp_path / "unitctl.sock", monkeypatch, fail=True)
    try:
        fleet.store.submit("s1", "rsi-reliance", "restart", {}, "asha")
        fleet.run(POLL)
    finally:
        helper.close()
    done = fleet.store.command("s1")
    assert done is not None and done.status == "failed"
    assert done.reason == "algo-strategy@rsi-reliance.service did not restart: Job failed. See journalctl -xe"


def test_a_helper_out_of_reach_leaves_the_command_pending(fleet: Fleet) -> None:
    fleet.store.submit("s1", "rsi-reliance", "stop", {}, "asha")
    fleet.run(POLL)
    done = fleet.store.command("s1")
    assert done is not None and done.status == "pending"


@pytest.mark.parametrize("line", [
    b"start algo-bus\n", b"start rsi-infy\n",  # not own-process: algo-equity runs it
    b"enable rsi-reliance\n", b"kill rsi-reliance\n", b"start rsi-reliance extra\n",
    b"start ../rsi-reliance\n", b"start rsi-reliance.service\n", b"start algo-strategy@rsi-reliance.service\n",
    b"start rsi-reliance\x00\n", b"start \xffrsi\n", b"", b"start  rsi-reliance\n", b"start RSI-RELIANCE\n",
])
def test_the_helper_refuses_everything_but_an_own_process_strategys_unit(line: bytes) -> None:
    config = load_config_text(OWN)
    with pytest.raises(Refused):
        parse(line, own_strategies(config))


def test_the_helper_accepts_start_stop_restart_of_own_process_strategies() -> None:
    allowed = own_strategies(load_config_text(OWN))
    assert allowed == {"rsi-reliance"}
    for verb in ("start", "stop", "restart"):
        assert parse(f"{verb} rsi-reliance\n".encode(), allowed) == (verb, "algo-strategy@rsi-reliance.service")


def load_config_text(replacement: str) -> FleetConfig:
    text = (REPO / "configs" / "paper.toml").read_text().replace('name = "rsi-reliance"\nkind = "rsi_reversion"',
                                                                 replacement)
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "fleet.toml").write_text(text)
        return load_config(Path(d) / "fleet.toml")
