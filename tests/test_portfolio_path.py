"""Portfolios in the order path, in process: algo-risk sizes a signal for every portfolio and approves one
net order, algo-execution's paper broker fills it in parts, risk allocates each fill back; one portfolio's
loss limit blocks only that portfolio; a restart of risk neither loses nor doubles an allocation."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from daemons.execution.main import ExecutionDaemon
from daemons.risk.main import RiskDaemon
from daemons.runtime.calendar import IST
from daemons.runtime.config import ConfigError, FleetConfig, load_config
from daemons.runtime.daemon import Daemon
from daemons.runtime.envelope import RISK_APPROVED, RISK_BLOCKED, Event, EventFactory
from daemons.runtime.instrument import InstrumentFacts
from daemons.runtime.metrics import DaemonMetrics
from daemons.runtime.transport import UnixTransport
from tests.conftest import REPO
from tests.helpers import unsent_frames

MARKET = int(datetime(2026, 11, 23, 10, 0, tzinfo=IST).timestamp() * 1e9)  # a Monday in trading hours
LOT = 5
PORTFOLIOS = [  # 10% of capital per entry: a 100 lots, b 200, c 50 at 1,000 x 5
    {"id": "a", "capital": 5_000_000.0, "daily_loss_limit": 20_000.0},
    {"id": "b", "capital": 10_000_000.0, "daily_loss_limit": 1_500.0},
    {"id": "c", "capital": 2_500_000.0, "daily_loss_limit": 20_000.0},
]


def config(risk: dict[str, Any] | None = None, **execution: Any) -> FleetConfig:
    return FleetConfig.model_validate({
        "daemons": {
            "equity": {"strategies": [
                {"name": "rsi-infy", "kind": "rsi_reversion", "params": {"symbol": "INFY", "quantity": 10}},
                {"name": "rsi-reliance", "kind": "rsi_reversion", "params": {"symbol": "RELIANCE", "quantity": 10}}]},
            "risk": {"max_quantity": 10**6, "max_notional": 1e11, "max_order_value": 1e11, **(risk or {})},
            "execution": {"latency_ms": 0, "liquidity_pct": 40.0, **execution},
        },
        "portfolios": [{**p, "strategies": ["rsi-infy"], "risk_fraction": 0.1, "max_lots": 1000,
                        "max_order_value": 1e9} for p in PORTFOLIOS],
    })


def tick(price: float, qty: int = 500) -> dict[str, Any]:
    return {"symbol": "INFY", "bid": price, "ask": price, "bid_qty": qty, "ask_qty": qty, "lot_size": LOT,
            "tick_size": 0.05, "exchange_ts": MARKET, "type": "EQ", "last_price": price}


def signal(n: int, side: str, price: float, *, entry: bool = True, strategy: str = "rsi-infy") -> dict[str, Any]:
    return {"engine": "equity", "strategy": strategy, "symbol": "INFY", "side": side, "quantity": 10,
            "order_type": "MARKET", "limit_price": None, "reason": "test", "entry": entry, "tick_price": price,
            "tick_exchange_ts": MARKET, "tick_ts": time.time_ns(), "signal_id": f"{strategy}:2026-11-23:{n}"}


def taken(d: Daemon) -> list[Event]:
    """What the daemon published since last asked (its bus client's outbox: no broker here)."""
    events = [Event(**orjson.loads(f.body)) for f in unsent_frames(d.bus)]
    cast(UnixTransport, d.bus.transport)._outbox.clear()
    return events


class Fleet:
    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch, risk: dict[str, Any] | None = None) -> None:
        self.tmp, self.monkeypatch, self.config = tmp, monkeypatch, config(risk)
        self.stamp = EventFactory("test").stamp
        monkeypatch.setenv("STATE_DIRECTORY", str(tmp / "execution"))
        self.execution = ExecutionDaemon(self.config, DaemonMetrics("execution"))
        asyncio.run(self.execution._open_day(datetime.now(IST).date()))
        self.risk = self.start_risk()
        self.fills: list[Event] = []  # every execution.fill, as execution would re-send them

    def start_risk(self) -> RiskDaemon:
        self.monkeypatch.setenv("STATE_DIRECTORY", str(self.tmp / "risk"))
        risk = RiskDaemon(self.config, DaemonMetrics("risk"))
        asyncio.run(risk.setup())
        return risk

    def market(self, price: float) -> list[Event]:
        """A tick to risk and execution; execution's fills to risk. Returns risk's allocations."""
        t = self.stamp("marketdata.tick", tick(price))[0]
        self.risk._on_tick(t)
        self.execution._on_tick(t)
        for e in taken(self.execution):
            if e.type == "execution.fill":
                self.fills.append(e)
                self.risk._on_fill(e)
        return [e for e in taken(self.risk) if e.type == "portfolio.allocation"]

    def signal(self, payload: dict[str, Any]) -> Event:
        """A signal to risk; its decision to execution. Returns the decision."""
        self.risk._on_signal(self.stamp("strategy.signal", payload)[0])
        (decision,) = self.decisions()
        return decision

    def decisions(self) -> list[Event]:
        """Risk's decisions since last asked, the approvals handed to execution."""
        decisions = [e for e in taken(self.risk) if e.type in (RISK_APPROVED, RISK_BLOCKED)]  # not risk.pnl
        for decision in decisions:
            if decision.type == "risk.approved":
                self.execution._on_approved(decision)
        return decisions

    def held(self) -> dict[str, int]:
        assert self.risk.desk is not None
        return dict(zip(self.risk.desk.book.ids, self.risk.desk.book.position("INFY").quantity.tolist(), strict=True))


def test_one_net_order_filled_in_parts_is_allocated_exactly_and_a_loss_limit_blocks_only_its_portfolio(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = Fleet(tmp_path, monkeypatch)
    fleet.market(1000.0)
    approved = fleet.signal(signal(1, "BUY", 1000.0))
    assert approved.type == "risk.approved"
    p = approved.payload
    assert (p["side"], p["quantity"], p["allocation_key"], p["portfolios"]) == ("BUY", 350 * LOT, "rsi-infy:2026-11-23:1", 3)
    allocations = []
    for _ in range(10):  # 40% of 500 shown per tick: 200 units (40 lots) a fill
        allocations += fleet.market(1000.0)
    assert sum(f.payload["quantity"] for f in fleet.fills) == 350 * LOT
    assert len(allocations) == len(fleet.fills) > 1
    for allocation, fill in zip(allocations, fleet.fills, strict=True):
        units = allocation.payload["units"]
        assert allocation.payload["fill_id"] == fill.payload["fill_id"] and set(allocation.payload["portfolios"]) <= set("abc")
        assert sum(units) == fill.payload["quantity"] and all(u % LOT == 0 for u in units)
    assert fleet.held() == {"a": 100 * LOT, "b": 200 * LOT, "c": 50 * LOT}

    # the exit: every portfolio closes at a loss of 10 a unit: b's 10,000 is past its 1,500 limit, the others within theirs
    assert fleet.signal(signal(2, "SELL", 990.0, entry=False)).payload["quantity"] == 350 * LOT
    for _ in range(10):
        fleet.market(990.0)
    assert fleet.held() == {"a": 0, "b": 0, "c": 0}
    assert fleet.risk.desk is not None
    realised = dict(zip(fleet.risk.desk.book.ids, fleet.risk.desk.book.realised.tolist(), strict=True))
    slip = {pid: -units * 10.0 for pid, units in {"a": 100 * LOT, "b": 200 * LOT, "c": 50 * LOT}.items()}
    assert realised == pytest.approx(slip, abs=0.5 * 350 * LOT)  # paper slippage (2 bps) on top of the 10 a unit

    # b is over its limit: the next entry is sized for a and c only; b's own limit blocks b alone
    third = fleet.signal(signal(3, "BUY", 990.0))
    assert third.type == "risk.approved" and third.payload["portfolios"] == 2
    assert fleet.risk.intents.labels("loss_limit")._value.get() == 1
    standing = {s: fleet.risk.metrics.registry.get_sample_value("algo_risk_portfolios", {"standing": s})
                for s in ("ok", "loss_limit", "disabled")}
    assert standing == {"ok": 2, "loss_limit": 1, "disabled": 0}, "counted, never labelled per portfolio"
    assert fleet.risk.status().endswith(", 3 portfolios (1 at their loss limit, 0 disabled)")
    for _ in range(10):
        fleet.market(990.0)
    held = fleet.held()
    assert held["b"] == 0 and held["a"] > 0 and held["c"] > 0

    # a strategy no portfolio follows trades its own quantity, as without portfolios
    own = fleet.signal({**signal(1, "BUY", 990.0, strategy="rsi-reliance"), "symbol": "INFY"})
    assert own.type == "risk.approved" and own.payload["quantity"] == 10 and "allocation_key" not in own.payload


def test_a_restart_of_risk_neither_loses_nor_doubles_an_allocation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = Fleet(tmp_path, monkeypatch)
    fleet.market(1000.0)
    approved = fleet.signal(signal(1, "BUY", 1000.0))
    fleet.market(1000.0)
    fleet.market(1000.0)
    before = fleet.held()
    assert 0 < sum(before.values()) < 350 * LOT
    asyncio.run(fleet.risk.drain())

    # risk is down while the rest of the order fills; execution's fills are held for it
    t = fleet.stamp("marketdata.tick", tick(1000.0))[0]
    while_down = []
    for _ in range(10):
        fleet.execution._on_tick(t)
        while_down += [e for e in taken(fleet.execution) if e.type == "execution.fill"]
    assert while_down

    fleet.risk = fleet.start_risk()
    assert fleet.held() == before, "restored from the allocation log"
    told = [e for e in taken(fleet.risk) if e.type == "portfolio.allocation"]
    assert len(told) == len(fleet.fills), "today's allocations told again at start (the report dedups by fill id)"
    for e in fleet.fills + while_down:  # execution re-sends every fill of the day after risk asks
        fleet.risk._on_fill(e)
    assert fleet.held() == {"a": 100 * LOT, "b": 200 * LOT, "c": 50 * LOT}
    assert fleet.risk.allocations._value.get() == len(while_down), "only the fills it had not allocated"
    for e in fleet.fills + while_down:  # and again: nothing changes
        fleet.risk._on_fill(e)
    assert fleet.held() == {"a": 100 * LOT, "b": 200 * LOT, "c": 50 * LOT}

    # a restart with the portfolios reordered and one added: the log names them by position in its ids
    asyncio.run(fleet.risk.drain())
    fleet.config = fleet.config.model_copy(update={"portfolios": [
        fleet.config.portfolios[2], fleet.config.portfolios[0],
        fleet.config.portfolios[0].model_copy(update={"id": "d"}), fleet.config.portfolios[1]]})
    fleet.risk = fleet.start_risk()
    assert fleet.held() == {"c": 50 * LOT, "a": 100 * LOT, "d": 0, "b": 200 * LOT}
    taken(fleet.risk)
    fleet.config = config()
    asyncio.run(fleet.risk.drain())
    fleet.risk = fleet.start_risk()
    assert fleet.held() == {"a": 100 * LOT, "b": 200 * LOT, "c": 50 * LOT}
    taken(fleet.risk)

    # a reload: the same portfolios keep their book; a changed limit builds it again from the log
    desk = fleet.risk.desk
    asyncio.run(fleet.risk.reload(config()))
    assert fleet.risk.desk is desk
    tighter = config()
    tighter = tighter.model_copy(update={"portfolios": [tighter.portfolios[0].model_copy(update={"max_lots": 1}),
                                                        *tighter.portfolios[1:]]})
    asyncio.run(fleet.risk.reload(tighter))
    assert fleet.risk.desk is not desk and fleet.held() == {"a": 100 * LOT, "b": 200 * LOT, "c": 50 * LOT}
    assert fleet.risk.desk is not None and fleet.risk.desk.book.max_lots.tolist() == [1, 1000, 1000]

    # the same signal delivered again (the broker's session after the restart) is not decided twice
    again = fleet.signal(signal(1, "BUY", 1000.0))
    assert again.payload == approved.payload
    assert len(fleet.execution.orders) == 1


def test_portfolios_in_the_config_are_checked_with_their_paths(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text("""
[[daemons.equity.strategies]]
name = "rsi-infy"
kind = "rsi_reversion"
params = { symbol = "INFY", quantity = 10 }

[[portfolios]]
id = "a"
capital = 100000.0
strategies = ["rsi-infy", "rsi-typo"]

[[portfolios]]
id = "a"
capital = -1.0
strategies = []
risk_fraction = 2.0
""")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    got = {str(p) for p in caught.value.problems}
    assert {p.split(":")[0] for p in got} == {"portfolios.1.capital", "portfolios.1.strategies", "portfolios.1.risk_fraction"}
    path.write_text(path.read_text().replace("capital = -1.0\nstrategies = []\nrisk_fraction = 2.0",
                                             'capital = 1.0\nstrategies = ["rsi-infy"]'))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert {str(p) for p in caught.value.problems} == {
        "portfolios.0.strategies: 'rsi-typo' is not a configured strategy",
        "portfolios.1.id: 'a' is already used by portfolios.0"}
    (tmp_path / "plain.toml").write_text("")
    assert load_config(tmp_path / "plain.toml").portfolios == []


def test_a_kill_switch_flattens_the_portfolios_with_an_order_of_their_own(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine holds the portfolios' 350 lots and 10 units of a strategy no portfolio follows: the flatten is
    two orders, the portfolios' allocated back to them (all flat after), the other one plain."""
    fleet = Fleet(tmp_path, monkeypatch, risk={"flatten_on_kill_switch": True})
    fleet.market(1000.0)
    fleet.signal(signal(1, "BUY", 1000.0))
    fleet.signal(signal(1, "BUY", 1000.0, strategy="rsi-reliance"))
    for _ in range(10):
        fleet.market(1000.0)
    assert fleet.risk.rules.book.quantity("INFY") == 350 * LOT + 10
    fleet.risk._on_kill_switch(fleet.stamp("control.kill_switch", {"engage": True, "reason": "test"})[0])
    flatten = fleet.decisions()
    assert sorted((d.payload["quantity"], "allocation_key" in d.payload) for d in flatten) == [(10, False), (350 * LOT, True)]
    facts = {InstrumentFacts.of_order(d.payload) for d in flatten}  # as a signal's: execution sends them at once
    assert facts == {InstrumentFacts.of_tick(tick(1000.0))}
    for _ in range(10):
        fleet.market(990.0)
    assert fleet.risk.rules.book.quantity("INFY") == 0
    assert fleet.held() == {"a": 0, "b": 0, "c": 0}


def test_algoctl_trace_follows_a_fill_to_its_allocation(tmp_path: Path) -> None:
    from daemons.algoctl.trace import find_chain, render
    from daemons.journal_format.layout import EVENTS

    def line(n: int, topic: str, payload: dict[str, Any]) -> bytes:
        return orjson.dumps({"id": f"e{n}", "ts": MARKET + n * 1_000_000, "type": topic, "source": "x", "seq": n,
                             "trace": "T1", "payload": payload}) + b"\n"

    (tmp_path / EVENTS).write_bytes(
        line(1, "execution.fill", {"fill_id": "F1", "side": "BUY", "quantity": 15, "symbol": "INFY", "price": 1000.0})
        + line(2, "portfolio.allocation", {"fill_id": "F1", "portfolios": ["a", "b"], "units": [10, 5]}))
    chain = find_chain(tmp_path, "F1")
    assert [e["type"] for e in chain] == ["execution.fill", "portfolio.allocation"]
    assert "fill F1 allocated to 2 portfolios" in render(chain)


def test_a_new_day_carries_the_positions_over_and_keeps_a_few_days_of_logs(tmp_path: Path) -> None:
    from daemons.risk.portfolios import KEEP_DAYS, Desk

    sections = config().portfolios
    desk = Desk(sections, tmp_path)
    desk.open("2026-11-20")
    desk.book.position("INFY").quantity[:] = [5, 0, -10]
    desk.book.position("INFY").average[:] = [1000.0, 0.0, 990.0]
    desk.book.realised[:] = -100.0
    for n in range(KEEP_DAYS + 2):
        desk.roll(f"2026-11-{23 + n}")
    desk.close()
    assert len(list(tmp_path.glob("*.wal"))) == KEEP_DAYS
    again = Desk(sections, tmp_path)
    again.open("2026-12-09")  # after a long weekend: carried from the newest day there is
    assert again.book.position("INFY").quantity.tolist() == [5, 0, -10]
    assert again.book.position("INFY").average.tolist() == [1000.0, 0.0, 990.0]
    assert again.book.realised.tolist() == [0.0, 0.0, 0.0]
    again.close()


def test_a_risk_without_portfolios_does_not_load_numpy(tmp_path: Path) -> None:
    """numpy costs a process ~12 MB of RSS (the fleet's budget is 45 MB a daemon): it is for a risk
    that has portfolios to size, not for every fleet's."""
    code = ("import asyncio, sys; from daemons.risk.main import RiskDaemon; from daemons.runtime.config import load_config; "
            "from daemons.runtime.metrics import DaemonMetrics; d = RiskDaemon(load_config(sys.argv[1]), DaemonMetrics('risk')); "
            "asyncio.run(d.setup()); print('numpy' in sys.modules)")
    env = {**os.environ, "STATE_DIRECTORY": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code, str(REPO / "configs" / "paper.toml")], capture_output=True,
                         text=True, env=env, check=True)
    assert out.stdout.strip() == "False", out.stderr
