"""algo-execution reads the ticks only of what it trades: an approval brings its instrument's facts; one
that does not waits for its symbol's first tick, and is refused, never sent late, if none comes in time."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import pytest

from daemons.engine.main import EquityEngine
from daemons.execution.instruments import Instruments
from daemons.execution.orders import Order
from daemons.runtime.config import load_config
from daemons.runtime.envelope import EventFactory
from daemons.runtime.instrument import ORDER_FIELDS, InstrumentFacts
from daemons.runtime.metrics import DaemonMetrics
from tests.conftest import REPO
from tests.test_execution import DAY, approval, daemon, published, tick
from tests.test_tick_filters import tick_filter

stamp = EventFactory("risk").stamp


def bare(n: int, **over: object) -> dict[str, object]:
    """An approval that says nothing of its instrument (risk's own flatten order, say)."""
    p = approval(n, **over)
    for name in ORDER_FIELDS:
        del p[name]
    return p


def test_an_approval_with_its_facts_is_placed_without_any_tick_and_its_symbol_watched(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = daemon(tmp_path, monkeypatch)
    assert d.paper is not None
    assert tick_filter(d.bus) == set(), "no orders today: no ticks at all"
    d._on_approved(stamp("risk.approved", approval(1, symbol="NIFTYFUT", quantity=150, lot_size=75,
                                                   instrument_type="FUT", exchange="NFO", tick_price=24000.0))[0])
    order = next(iter(d.orders.values()))
    assert order.status == "OPEN" and (order.instrument_type, order.exchange) == ("FUT", "NFO")
    assert d.paper.instruments["NIFTYFUT"] == (75, 0.05)
    assert d.sender.margin_model.marks["NIFTYFUT"] == (24000.0, 0.0), "margin judged at the approval's tick price"
    assert tick_filter(d.bus) == {"NIFTYFUT"}, "its ticks from now on: the paper broker fills on them"
    d._close_files()


def test_a_restart_watches_the_symbols_of_the_days_orders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = daemon(tmp_path, monkeypatch)
    d._on_approved(stamp("risk.approved", approval(1, symbol="TCS"))[0])
    d._close_files()
    again = daemon(tmp_path, monkeypatch)
    assert tick_filter(again.bus) == {"TCS"}
    again._close_files()


def test_an_approval_without_facts_waits_for_the_first_tick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = daemon(tmp_path, monkeypatch)
    assert d.paper is not None
    d._on_approved(stamp("risk.approved", bare(1, symbol="TCS"))[0])
    order = next(iter(d.orders.values()))
    assert order.status == "NEW" and not d.paper.orders, "logged, not sent on a guessed lot size"
    assert d.sender.instruments.waiting == 1 and tick_filter(d.bus) == {"TCS"}
    d._on_tick(EventFactory("marketdata").stamp("marketdata.tick", {**tick("TCS"), "exchange": "NSE"})[0])
    assert order.status == "OPEN" and (order.instrument_type, order.exchange) == ("EQ", "NSE")
    assert d.sender.instruments.waiting == 0
    d._close_files()


def test_one_that_waits_too_long_is_refused_not_sent_late(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = daemon(tmp_path, monkeypatch)
    d._on_approved(stamp("risk.approved", bare(1, symbol="TCS"))[0])
    d.sender.expire_parked(time.monotonic() + 1)
    assert d.sender.instruments.waiting == 1, "within max_order_age_sec it still waits"
    d.sender.expire_parked(time.monotonic() + d.section.max_order_age_sec + 1)
    order = next(iter(d.orders.values()))
    assert order.status == "REJECTED" and order.reason.startswith("stale: no tick of TCS came")
    assert [p["reason"] for t, p in published(d) if t == "execution.reject"] == [order.reason]
    d._on_tick(EventFactory("marketdata").stamp("marketdata.tick", tick("TCS"))[0])
    assert d.paper is not None and not d.paper.orders, "a tick after the refusal sends nothing"
    d._close_files()


@pytest.mark.parametrize(("bad", "why"), [({"lot_size": 0}, "lot_size"), ({"lot_size": "75"}, "lot_size"),
                                          ({"tick_size": -1}, "tick_size"), ({"strike": float("nan")}, "strike"),
                                          ({"exchange": 7}, "exchange")])
def test_malformed_facts_refuse_the_approval_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            bad: dict[str, object], why: str) -> None:
    d = daemon(tmp_path, monkeypatch)
    d._on_approved(stamp("risk.approved", approval(1, **bad))[0])
    assert not d.orders
    [reason] = [p["reason"] for t, p in published(d) if t == "execution.reject"]
    assert reason.startswith("malformed approved order") and why in reason
    d._close_files()


def test_instruments_release_only_the_symbols_orders_and_keep_the_first_facts() -> None:
    book = Instruments()
    orders = [Order.from_approved(f"c{n}", approval(n, symbol=s), "", "", "t") for n, s in enumerate(("A", "A", "B"))]
    for order in orders:
        book.park(order, 0.0)
    assert book.learn("A", InstrumentFacts("FUT", "NFO", 50, 0.05, 0.0)) == orders[:2]
    assert book.learn("A", InstrumentFacts("EQ", "NSE", 1, 0.05, 0.0)) == [], "an instrument does not change"
    assert book.get("A") == InstrumentFacts("FUT", "NFO", 50, 0.05, 0.0)
    assert book.waiting == 1 and book.expired(5.0, 10.0) == [] and book.expired(11.0, 10.0) == [orders[2]]


def test_an_engines_signal_carries_the_facts_of_its_symbols_tick(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    path = tmp_path / "fleet.toml"
    path.write_text((REPO / "configs" / "paper.toml").read_text())
    engine = EquityEngine(load_config(path), DaemonMetrics("equity"))
    ts = 1_763_610_300_000_000_000  # 2025-11-20 09:15 IST
    p = {"token": 408065, "symbol": "INFY", "last_price": 1500.0, "bid": 1499.9, "ask": 1500.1, "volume": 1, "oi": 0,
         "exchange_ts": ts, "type": "EQ", "underlying": "", "strike": 0.0, "expiry": None,
         "exchange": "NSE", "lot_size": 1, "tick_size": 0.1}
    event = EventFactory("marketdata").stamp("marketdata.tick", p)[0]
    engine._on_tick(event)
    buy = engine.strategies["rsi-infy"].signal("INFY", "BUY", 1, "test", entry=True)
    [signal] = engine._stamped("rsi-infy", [buy], 1500.0, ts, event)
    assert InstrumentFacts.of_order(signal) == InstrumentFacts("EQ", "NSE", 1, 0.1, 0.0)


def test_a_day_roll_refuses_what_still_waits_and_forgets_the_facts(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    d = daemon(tmp_path, monkeypatch)
    d._on_approved(stamp("risk.approved", bare(1, symbol="TCS"))[0])
    d._on_approved(stamp("risk.approved", approval(2, symbol="NIFTYFUT", lot_size=75, quantity=75))[0])
    waiting = next(o for o in d.orders.values() if o.symbol == "TCS")
    assert "NIFTYFUT" in d.sender.instruments and d.sender.instruments.waiting == 1
    asyncio.run(d._roll(DAY + timedelta(days=1)))
    assert waiting.status == "REJECTED" and waiting.reason.startswith("end of day: no tick of TCS came")
    assert "NIFTYFUT" not in d.sender.instruments and d.sender.instruments.waiting == 0, "a new day's contracts are learned anew"
    d._close_files()
