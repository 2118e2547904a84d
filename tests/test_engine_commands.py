"""Control-plane commands in the unit that hosts the strategy: ``control.command`` applied once per id and
answered with ``control.result``; bad parameters fail with the strategy's reason and change nothing; what a
command changed (stopped, parameters, the outcomes by id) outlives a restart of the engine."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from daemons.engine.main import EngineDaemon, EquityEngine, strategy_process
from daemons.runtime.config import load_config
from daemons.runtime.envelope import CONTROL_COMMAND, CONTROL_PAUSE, CONTROL_RESULT, EXECUTION_FILL, Event
from daemons.runtime.metrics import DaemonMetrics
from tests.conftest import REPO
from tests.test_strategy_isolation import tick_event

PAPER = (REPO / "configs" / "paper.toml").read_text()


class Engine:
    """An engine daemon in-process, with what it publishes recorded (no broker)."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str = PAPER,
                 cls: type[EngineDaemon] = EquityEngine) -> None:
        tmp_path.mkdir(exist_ok=True)
        monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
        path = tmp_path / "fleet.toml"
        path.write_text(text)
        self.daemon = cls(load_config(path), DaemonMetrics(cls.name))
        self.sent: list[tuple[str, dict[str, Any]]] = []
        publish = self.daemon.bus.publish

        def record(topic: str, payload: dict[str, Any], **kw: Any) -> Event:
            self.sent.append((topic, payload))
            return publish(topic, payload, **kw)
        monkeypatch.setattr(self.daemon.bus, "publish", record)

    def command(self, command_id: str, verb: str, strategy: str, *, unit: str = "algo-equity",
                args: dict[str, Any] | None = None, params: dict[str, Any] | None = None,
                kind: str | None = None) -> None:
        payload = {"command_id": command_id, "verb": verb, "strategy": strategy, "args": args or {},
                   "actor": "asha", "unit": unit, "params": params, "kind": kind}
        self.daemon._on_control(Event(CONTROL_COMMAND, "commander", 1, payload, f"e-{command_id}", 1, f"t-{command_id}"))

    def results(self) -> list[tuple[str, str, str | None]]:
        return [(p["command_id"], p["status"], p["reason"]) for t, p in self.sent if t == CONTROL_RESULT]

    def signals(self, strategy: str) -> list[dict[str, Any]]:
        return [p for t, p in self.sent if t == "strategy.signal" and p["strategy"] == strategy]

    def count(self, verb: str, outcome: str) -> float | None:
        return self.daemon.metrics.registry.get_sample_value("algo_engine_commands_total",
                                                             {"verb": verb, "outcome": outcome})


def oversold_ticks(engine: Engine, symbol: str = "INFY") -> None:
    """A price that wavers, then falls: RSI crosses below 30 once, an entry for what watches the symbol
    (the strategy is edge-triggered: a price falling from the first tick never crosses, it starts below)."""
    for n, price in enumerate([100.0 + i % 2 for i in range(16)] + [100.0 - 2 * i for i in range(1, 12)], start=1):
        event = tick_event(n, symbol)
        engine.daemon._on_tick(Event(event.type, event.source, n, {**event.payload, "last_price": price}, event.id,
                                     event.ts, event.trace))


def test_a_pause_command_blocks_entries_and_is_answered_once_per_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    engine = Engine(tmp_path, monkeypatch)
    caplog.set_level(logging.INFO, "algo.engine")
    engine.command("c1", "pause", "rsi-infy")
    assert engine.results() == [("c1", "executed", None)]
    assert engine.daemon.paused == {"rsi-infy"}
    oversold_ticks(engine)
    assert not [s for s in engine.signals("rsi-infy") if s["entry"]]
    line = next(r for r in caplog.records if "pause rsi-infy by asha: executed" in r.getMessage())
    assert [getattr(line, f) for f in ("STRATEGY", "ACTOR", "COMMAND_ID", "ENGINE")] == ["rsi-infy", "asha", "c1", "equity"]
    # resumed over the bus meanwhile; the same command sent again is answered, not applied again
    engine.daemon._on_control(Event(CONTROL_PAUSE.replace("pause", "resume"), "algoctl", 1, {"strategy": "rsi-infy"},
                                    "r", 1, "r"))
    engine.command("c1", "pause", "rsi-infy")
    assert engine.results() == [("c1", "executed", None)] * 2
    assert engine.daemon.paused == set()
    assert engine.count("pause", "executed") == 1 and engine.count("pause", "repeated") == 1


def test_rejected_parameters_fail_with_the_strategys_reason_and_change_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = Engine(tmp_path, monkeypatch)
    before = engine.daemon.strategies["rsi-infy"]
    before.position = {"INFY": 10}
    engine.command("bad", "update_config", "rsi-infy", args={"params": {"quantity": -5}})
    assert engine.results() == [("bad", "failed", "parameters rejected by the strategy: quantity must be positive")]
    assert engine.daemon.strategies["rsi-infy"] is before and before.params["quantity"] == 10
    engine.command("good", "update_config", "rsi-infy", args={"params": {"oversold": 25.0}})
    after = engine.daemon.strategies["rsi-infy"]
    assert engine.results()[-1] == ("good", "executed", None)
    assert after.params["oversold"] == 25.0 and after.position == {"INFY": 10}
    assert engine.count("update_config", "failed") == 1


def test_an_unknown_strategy_fails_and_another_units_command_is_not_answered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = Engine(tmp_path, monkeypatch)
    engine.command("x", "pause", "ema-nifty")  # algo-fno's strategy
    engine.command("y", "pause", "ema-nifty", unit="algo-fno")
    assert engine.results() == [("x", "failed", "unknown strategy 'ema-nifty': algo-equity does not host it")]


def test_stop_and_start_a_strategy_in_the_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = Engine(tmp_path, monkeypatch)
    engine.command("s1", "stop", "rsi-infy")
    assert "rsi-infy" not in engine.daemon.strategies and "(1 stopped)" in engine.daemon.status()
    oversold_ticks(engine)
    assert engine.signals("rsi-infy") == []
    fill = {"strategy": "rsi-infy", "fill_id": "f1", "symbol": "INFY", "side": "BUY", "quantity": 10, "price": 90.0}
    engine.daemon._on_fill(Event(EXECUTION_FILL, "execution", 1, fill, "f", 1, "f"))  # an order sent before the stop
    engine.command("s2", "pause", "rsi-infy")
    engine.command("s3", "start", "rsi-infy", params={"symbol": "INFY", "quantity": 12, "period": 14,
                                                      "oversold": 30.0, "exit_above": 55.0})
    assert engine.results() == [("s1", "executed", None), ("s2", "failed", "pause needs a strategy that is running or "
                                                           "paused; it is stopped"), ("s3", "executed", None)]
    started = engine.daemon.strategies["rsi-infy"]
    assert started.position == {"INFY": 10} and started.params["quantity"] == 12


def test_what_commands_changed_outlives_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = PAPER.replace('name = "rsi-reliance"\nkind = "rsi_reversion"', 'name = "rsi-reliance"\nkind = "rsi_reversion"'
                         '\nenabled = false')
    engine = Engine(tmp_path, monkeypatch, text)
    assert "rsi-reliance" not in engine.daemon.strategies
    engine.command("a", "start", "rsi-reliance")  # disabled in fleet.toml, started at run time
    engine.command("b", "update_config", "rsi-infy", args={"params": {"period": 10}})
    engine.command("c", "stop", "rsi-infy")
    engine.daemon.save()
    again = Engine(tmp_path, monkeypatch, text)
    asyncio.run(again.daemon.setup())
    assert set(again.daemon.strategies) == {"rsi-reliance"}
    assert again.daemon.stopped["rsi-infy"].params["period"] == 10
    again.command("c", "stop", "rsi-infy")
    again.command("d", "start", "rsi-infy")
    assert again.results() == [("c", "executed", None), ("d", "executed", None)]
    assert again.daemon.strategies["rsi-infy"].params["period"] == 10
    assert again.count("stop", "repeated") == 1


def test_a_strategy_created_at_run_time_runs_from_the_commands_definition_and_outlives_a_restart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """POST /strategies adds a strategy fleet.toml does not declare; the commander's commands carry the
    registry's kind and parameters, which build it; its kind is checkpointed for the next start."""
    params = {"symbol": "INFY", "quantity": 7, "period": 14, "oversold": 30.0, "exit_above": 55.0}
    engine = Engine(tmp_path, monkeypatch)
    engine.command("p0", "pause", "rsi-new", params=params, kind="rsi_reversion")
    engine.command("bad", "start", "rsi-new", params={**params, "quantity": -1}, kind="rsi_reversion")
    assert "rsi-new" not in engine.daemon._hosted()
    engine.command("s1", "start", "rsi-new", params=params, kind="rsi_reversion")
    assert engine.results() == [
        ("p0", "failed", "pause needs a strategy that is running or paused; it is stopped"),
        ("bad", "failed", "parameters rejected by the strategy: quantity must be positive"),
        ("s1", "executed", None)]
    oversold_ticks(engine)
    entries = [s for s in engine.signals("rsi-new") if s["entry"]]
    assert [(s["symbol"], s["quantity"]) for s in entries] == [("INFY", 7)]
    engine.command("u1", "update_config", "rsi-new", args={"params": {"quantity": 9}}, params=params,
                   kind="rsi_reversion")
    engine.command("p1", "pause", "rsi-new", params=params, kind="rsi_reversion")
    engine.daemon.save()

    again = Engine(tmp_path, monkeypatch)
    asyncio.run(again.daemon.setup())
    restored = again.daemon.strategies["rsi-new"]
    assert (restored.kind, restored.params["quantity"]) == ("rsi_reversion", 9)
    assert again.daemon.paused == {"rsi-new"} and again.daemon.created == {"rsi-new": "rsi_reversion"}
    # fleet.toml declaring it later takes over: it is no longer a creation of a command
    declared = PAPER + ('\n[[daemons.equity.strategies]]\nname = "rsi-new"\nkind = "rsi_reversion"\n'
                        'params = { symbol = "INFY", quantity = 3, period = 14, oversold = 30.0, exit_above = 55.0 }\n')
    path = tmp_path / "fleet.toml"
    path.write_text(declared)
    asyncio.run(again.daemon.reload(load_config(path)))
    assert again.daemon.strategies["rsi-new"].params["quantity"] == 3 and again.daemon.created == {}


def test_a_strategy_in_its_own_process_answers_for_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = PAPER.replace('name = "rsi-reliance"\nkind = "rsi_reversion"', 'name = "rsi-reliance"\nkind = "rsi_reversion"'
                         '\nprocess = "own"\nmetrics_port = 9490')
    own = Engine(tmp_path / "own", monkeypatch, text, strategy_process("rsi-reliance"))
    equity = Engine(tmp_path / "equity", monkeypatch, text)
    for engine in (own, equity):
        engine.command("p", "pause", "rsi-reliance", unit="algo-strategy@rsi-reliance")
    assert own.results() == [("p", "executed", None)] and equity.results() == []
    assert own.daemon.paused == {"rsi-reliance"}
