"""algo-risk under systemd: signals are approved or blocked with a reason; a loss-limit breach and
`control.kill_switch` block entries from the next signal on; positions survive kill -9."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from daemons.algoctl.sandbox import Sandbox
from daemons.runtime.calendar import IST
from daemons.runtime.envelope import RISK_APPROVED, RISK_BLOCKED
from tests.helpers import wait_until
from tests.systemd.busclient import Listener

pytestmark = pytest.mark.systemd

RISK = "algo-risk.service"
MARKET = int(datetime(2026, 11, 23, 10, 0, tzinfo=IST).timestamp() * 1e9)


def tick(symbol: str, price: float) -> dict[str, Any]:
    return {"token": 1, "symbol": symbol, "last_price": price, "bid": price, "ask": price, "volume": 0, "oi": 0,
            "exchange_ts": MARKET, "type": "EQ", "underlying": symbol, "strike": 0.0, "expiry": None}


PRICES = {"INFY": 1000.0, "TCS": 4000.0}  # where the tests' markets open


def signal(symbol: str, side: str, qty: int, entry: bool, engine: str = "equity") -> dict[str, Any]:
    """As an engine sends it: with the price and exchange time of the tick that caused it (risk asks the
    broker only for the ticks of what it holds; a signal brings its own)."""
    return {"engine": engine, "strategy": f"{engine}-test", "symbol": symbol, "side": side, "quantity": qty,
            "order_type": "MARKET", "limit_price": None, "reason": "test", "entry": entry,
            "tick_price": PRICES[symbol], "tick_exchange_ts": MARKET}


def decisions(listener: Listener) -> list[tuple[str, str, str]]:
    return [(ev.type, ev.payload["symbol"], ev.payload.get("block_reason", "")) for _, ev in listener.events
            if ev.type in (RISK_APPROVED, RISK_BLOCKED)]  # not risk.pnl


def test_loss_limit_breach_engages_the_kill_switch_and_it_survives_kill_9(sandbox: Sandbox) -> None:
    sandbox.systemctl("start", RISK, check=True)
    with Listener(sandbox, "risk.*", "control.kill_switch") as bus:
        send = bus.publish
        bus.tick(tick("INFY", 1000.0))
        bus.tick(tick("TCS", 4000.0))
        send("strategy.signal", signal("INFY", "BUY", 50, True), trace="sig-1")
        wait_until(lambda: decisions(bus), 5, "a decision")
        assert decisions(bus) == [("risk.approved", "INFY", "")]
        send("execution.fill", {"engine": "equity", "strategy": "equity-test", "symbol": "INFY", "side": "BUY",
                                "quantity": 50, "price": 1000.0})
        bus.tick(tick("INFY", 790.0))  # -10,500 against a 10,000 limit
        wait_until(lambda: any(ev.type == "control.kill_switch" for _, ev in bus.events), 5, "the kill switch")
        send("strategy.signal", signal("TCS", "BUY", 5, True, engine="fno"), trace="sig-2")
        send("strategy.signal", signal("INFY", "SELL", 50, False), trace="sig-3")
        wait_until(lambda: len(decisions(bus)) == 3, 5, "two more decisions")
    blocked, exit_ok = decisions(bus)[1:]
    assert blocked[:2] == ("risk.blocked", "TCS") and blocked[2].startswith(
        "kill switch engaged: loss limit: equity daily loss -10,500 breached its limit 10,000")
    assert exit_ok == ("risk.approved", "INFY", "")
    assert "KILL SWITCH ENGAGED" in sandbox.journalctl("-u", RISK, "-p", "err", "-o", "cat").stdout
    assert "STRATEGY=fno-test" in sandbox.journalctl("-u", RISK, "TRACE_ID=sig-2", "-o", "verbose").stdout

    sandbox.systemctl("kill", "--signal=SIGKILL", RISK, check=True)
    wait_until(lambda: int(sandbox.show(RISK, "NRestarts")["NRestarts"]) >= 1
               and sandbox.show(RISK, "ActiveState")["ActiveState"] == "active", 20, "the restart")
    status = sandbox.show(RISK, "StatusText")["StatusText"]
    assert status.startswith("1 open positions") and "KILL SWITCH (loss limit" in status


def test_manual_kill_switch_blocks_entries_from_the_next_signal(sandbox: Sandbox) -> None:
    sandbox.systemctl("start", RISK, check=True)
    with Listener(sandbox, "risk.*") as bus:
        send = bus.publish
        bus.tick(tick("INFY", 1000.0))
        send("strategy.signal", signal("INFY", "BUY", 5, True))  # it may overtake its tick
        send("control.kill_switch", {"engage": True, "reason": "operator: flat for the RBI announcement"})
        send("strategy.signal", signal("INFY", "BUY", 5, True))
        wait_until(lambda: len(decisions(bus)) == 2, 5, "two decisions")
    assert decisions(bus) == [
        ("risk.approved", "INFY", ""),
        ("risk.blocked", "INFY", "kill switch engaged: operator: flat for the RBI announcement"),
    ]
