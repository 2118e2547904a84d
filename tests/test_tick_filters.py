"""Engines and risk ask the broker only for the ticks they read: an engine for its strategies' symbols
and underlyings, risk for the symbols it holds or has just approved (a signal carries its own tick)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from daemons.engine.main import EngineDaemon, EquityEngine, FnoEngine, OptionsEngine
from daemons.risk.main import RiskDaemon
from daemons.runtime import wire
from daemons.runtime.client import BusClient
from daemons.runtime.config import FleetConfig, load_config
from daemons.runtime.envelope import MARKETDATA_TICK, STRATEGY_SIGNAL, Event
from daemons.runtime.metrics import DaemonMetrics
from tests.conftest import REPO

PAPER = (REPO / "configs" / "paper.toml").read_text()


def tick_filter(bus: BusClient) -> set[str] | None:
    """The key filter the client sends the broker for marketdata.tick (None: every tick)."""
    for frame in bus.subscription_frames():
        (parsed,) = wire.FrameReader(1 << 20).feed(frame)
        if parsed.topic == MARKETDATA_TICK.encode():
            return set(orjson.loads(parsed.body)) if parsed.body else None
    raise AssertionError("not subscribed to marketdata.tick")


@pytest.mark.parametrize(("cls", "names"), [(FnoEngine, {"NIFTY"}), (EquityEngine, {"INFY", "RELIANCE"}),
                                            (OptionsEngine, {"NIFTY", "NIFTY 50"})])
def test_an_engine_asks_for_what_its_strategies_watch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       cls: type[EngineDaemon], names: set[str]) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    path = tmp_path / "fleet.toml"
    path.write_text(PAPER)
    engine = cls(load_config(path), DaemonMetrics(cls.name))
    assert tick_filter(engine.bus) == names


def test_a_reload_changes_the_filter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    path = tmp_path / "fleet.toml"
    path.write_text(PAPER)
    engine = EquityEngine(load_config(path), DaemonMetrics("equity"))
    path.write_text(PAPER.replace('symbol = "RELIANCE"', 'symbol = "TCS"'))
    asyncio.run(engine.reload(load_config(path)))
    assert tick_filter(engine.bus) == {"INFY", "TCS"}


def signal(symbol: str, n: int) -> Event:
    payload = {"engine": "equity", "strategy": "rsi-infy", "symbol": symbol, "side": "BUY", "quantity": 1,
               "entry": True, "signal_id": f"s{n}", "tick_price": 100.0,
               "tick_exchange_ts": 1_763_610_300_000_000_000 + n}  # 2025-11-20 09:15 IST: a trading day and hour
    return Event(STRATEGY_SIGNAL, "equity", n, payload, f"e{n}", n, f"t{n}")


def test_risk_asks_for_the_ticks_of_what_it_holds_and_approves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    yesterday = RiskDaemon(FleetConfig(), DaemonMetrics("risk"))
    assert tick_filter(yesterday.bus) == set()  # nothing held: no ticks at all
    yesterday.rules.fill("equity", "rsi-infy", "INFY", "BUY", 10, 1000.0)
    yesterday.save()
    risk = RiskDaemon(FleetConfig(), DaemonMetrics("risk"))
    asyncio.run(risk.setup())
    assert tick_filter(risk.bus) == {"INFY"}
    risk._on_signal(signal("TCS", 1))
    assert risk.decisions.labels("approved")._value.get() == 1  # approved from the signal's own tick
    assert tick_filter(risk.bus) == {"INFY", "TCS"}
    risk._on_signal(signal("A|B", 2))  # a name a filter cannot carry is not asked for (nor sent to the broker)
    assert tick_filter(risk.bus) == {"INFY", "TCS"}
