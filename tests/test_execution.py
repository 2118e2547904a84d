"""algo-execution without systemd: the paper broker's matching, the write-ahead log, and every
reconciliation path after a crash, on real files."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest

from daemons.execution.clientid import client_id
from daemons.execution.main import ExecutionDaemon
from daemons.execution.orders import BadOrder, Order
from daemons.execution.paper import PaperBroker
from daemons.runtime.config import ExecutionSection, FleetConfig
from daemons.runtime.metrics import DaemonMetrics
from daemons.runtime.wal import RecordLog
from tests.helpers import unsent_frames

DAY = date(2026, 11, 20)


def tick(symbol: str = "INFY", bid: float = 1000.0, ask: float = 1000.5, lot: int = 1, qty: int = 100,
         ts: int = 1) -> dict[str, Any]:
    return {"symbol": symbol, "bid": bid, "ask": ask, "bid_qty": qty, "ask_qty": qty, "lot_size": lot,
            "tick_size": 0.05, "exchange_ts": ts, "type": "EQ", "last_price": (bid + ask) / 2}


def broker(tmp_path: Path, **cfg: Any) -> PaperBroker:
    return PaperBroker(tmp_path / "broker.jsonl", ExecutionSection(**cfg), DAY)


def test_client_ids_are_deterministic_kite_tags() -> None:
    a, b = client_id("ema-nifty:2026-11-20:1"), client_id("ema-nifty:2026-11-20:2")
    assert a == client_id("ema-nifty:2026-11-20:1") and a != b
    assert len(a) == 20 and a.isalnum() and a.isupper()


def test_market_order_fills_after_latency_at_the_touch_with_slippage(tmp_path: Path) -> None:
    b = broker(tmp_path, latency_ms=100, slippage_bps=10)
    b.on_tick(tick(), 0)
    order = b.place("T1", "INFY", "BUY", 10, "MARKET", None, now_ns=0)
    assert order.status == "OPEN"
    assert b.on_tick(tick(), 50_000_000) == []  # 50 ms: too early
    [(done, trade)] = b.on_tick(tick(ts=7), 100_000_000)
    assert trade.price == 1001.55  # 1000.5 * 1.001 = 1001.5005, rounded up to the next 0.05 tick: never better
    assert done.status == "COMPLETE" and done.filled == 10 and trade.exchange_ts == 7


def test_limit_orders_wait_for_their_price(tmp_path: Path) -> None:
    b = broker(tmp_path, latency_ms=0)
    b.on_tick(tick(), 0)
    b.place("T1", "INFY", "SELL", 5, "LIMIT", 1002.0, now_ns=0)
    assert b.on_tick(tick(bid=1001.0), 1) == []
    [(order, trade)] = b.on_tick(tick(bid=1003.0, ask=1003.5), 2)
    assert trade.price == 1003.0 and order.average == 1003.0


def test_partial_fills_take_a_share_of_the_touch_in_whole_lots(tmp_path: Path) -> None:
    b = broker(tmp_path, latency_ms=0, liquidity_pct=50)
    b.on_tick(tick(symbol="NIFTYFUT", lot=75, qty=300), 0)
    b.place("T1", "NIFTYFUT", "BUY", 375, "MARKET", None, now_ns=0)
    sizes = [t.quantity for _ in range(4) for _, t in b.on_tick(tick(symbol="NIFTYFUT", lot=75, qty=300), 1)]
    assert sizes == [150, 150, 75]  # 50% of 300 = 2 lots a tick, then the remainder
    done = b.find("T1")
    assert done is not None and done.status == "COMPLETE"


def test_rejections_lot_size_unknown_symbol_and_simulated_rms(tmp_path: Path) -> None:
    b = broker(tmp_path, reject_pct=100)
    b.on_tick(tick(symbol="NIFTYFUT", lot=75), 0)
    assert "lot size 75" in b.place("T1", "NIFTYFUT", "BUY", 50, "MARKET", None, 0).reason
    assert "unknown instrument" in b.place("T2", "NOPE", "BUY", 75, "MARKET", None, 0).reason
    assert "RMS" in b.place("T3", "NIFTYFUT", "BUY", 75, "MARKET", None, 0).reason
    assert all(o.status == "REJECTED" for o in b.orders.values())


def test_the_broker_book_survives_a_restart(tmp_path: Path) -> None:
    b = broker(tmp_path, latency_ms=0, liquidity_pct=50)
    b.on_tick(tick(qty=10), 0)
    b.place("T1", "INFY", "BUY", 10, "MARKET", None, 0)
    b.on_tick(tick(qty=10), 1)
    b.close()
    again = broker(tmp_path)
    order = again.find("T1")
    assert order is not None and order.filled == 5 and order.status == "OPEN"
    assert [t.quantity for t in again.trades_of(order.order_id)] == [5]
    assert again.instruments["INFY"] == (1, 0.05)


def test_a_torn_wal_record_is_dropped_and_the_file_stays_appendable(tmp_path: Path) -> None:
    path = tmp_path / "orders.wal"
    log = RecordLog(path)
    log.append({"op": "new", "client_id": "A"})
    log.close()
    with open(path, "ab") as f:
        f.write(b'{"op":"placed","cli')  # the crash came mid-write
    log = RecordLog(path)
    assert log.records == [{"op": "new", "client_id": "A"}]
    log.append({"op": "placed", "client_id": "A", "order_id": "1"})
    log.close()
    assert [orjson.loads(line)["op"] for line in path.read_bytes().splitlines()] == ["new", "placed"]


def approval(n: int, **over: Any) -> dict[str, Any]:
    return {"engine": "equity", "strategy": "rsi-infy", "symbol": "INFY", "side": "BUY", "quantity": 10,
            "order_type": "MARKET", "limit_price": None, "signal_id": f"rsi-infy:2026-11-20:{n}",
            "tick_ts": time.time_ns(), "instrument_type": "EQ", "exchange": "NSE", "lot_size": 1, "tick_size": 0.05,
            "strike": 0.0, **over}


@pytest.mark.parametrize("bad, why", [
    ({"side": "HOLD"}, "side"), ({"quantity": 0}, "quantity"), ({"quantity": "ten"}, "quantity"),
    ({"order_type": "LIMIT"}, "limit_price"), ({"order_type": "SL"}, "order_type"),
])
def test_bad_approvals_are_refused_with_the_reason(bad: dict[str, Any], why: str) -> None:
    with pytest.raises(BadOrder, match=why):
        Order.from_approved("X", approval(1, **bad), "EQ", "NSE", "t")


def daemon(state: Path, monkeypatch: pytest.MonkeyPatch) -> ExecutionDaemon:
    monkeypatch.setenv("STATE_DIRECTORY", str(state))
    d = ExecutionDaemon(FleetConfig(), DaemonMetrics("execution"))
    asyncio.run(d._open_day(DAY))
    return d


def published(d: ExecutionDaemon) -> list[tuple[str, dict[str, Any]]]:
    """What the daemon handed to its bus client (held in the outbox: no broker in these tests)."""
    return [(f.topic.decode(), orjson.loads(f.body)["payload"]) for f in unsent_frames(d.bus)]


def test_reconciliation_adopts_sends_and_recovers_fills(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / DAY.isoformat()
    folder.mkdir()
    b = broker(folder, latency_ms=0)
    b.on_tick(tick(), 0)
    wal = RecordLog(folder / "orders.wal")
    intents = {n: Order.from_approved(client_id(f"rsi-infy:2026-11-20:{n}"), approval(n), "EQ", "NSE", f"t{n}")
               for n in (1, 2, 3)}
    for order in intents.values():
        wal.append(order.intent())
    # 1: sent and acknowledged, then filled at the broker after the crash began (no fill in the WAL)
    first = b.place(intents[1].client_id, "INFY", "BUY", 10, "MARKET", None, 0)
    wal.append({"op": "placed", "client_id": intents[1].client_id, "order_id": first.order_id})
    b.on_tick(tick(), 1)
    # 2: reached the broker, the answer never reached the WAL
    b.place(intents[2].client_id, "INFY", "BUY", 10, "MARKET", None, 0)
    # 3: in the WAL only: never sent
    wal.close()
    b.close()

    d = daemon(tmp_path, monkeypatch)
    assert {k: v.status for k, v in d.orders.items()} == {
        intents[1].client_id: "COMPLETE", intents[2].client_id: "OPEN", intents[3].client_id: "OPEN"}
    assert d.paper is not None
    assert len(d.paper.orders) == 3, "nothing was placed twice"
    got = {r: d.reconciled.labels(r)._value.get() for r in ("adopted", "sent", "fills_recovered")}
    assert got == {"adopted": 1, "sent": 1, "fills_recovered": 1}
    fills = [p for t, p in published(d) if t == "execution.fill"]
    assert [f["client_id"] for f in fills] == [intents[1].client_id]
    d._close_files()

    again = daemon(tmp_path, monkeypatch)  # a second restart changes nothing
    assert {k: v.status for k, v in again.orders.items()} == {k: v.status for k, v in d.orders.items()}
    assert again.reconciled.labels("sent")._value.get() == 0
    again._close_files()


def test_duplicate_and_stale_approvals_are_not_sent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from daemons.runtime.envelope import EventFactory

    d = daemon(tmp_path, monkeypatch)
    assert d.paper is not None
    d.paper.on_tick(tick(), 0)
    stamp = EventFactory("risk").stamp
    d._on_approved(stamp("risk.approved", approval(1))[0])
    d._on_approved(stamp("risk.approved", approval(1))[0])  # delivered again (risk re-sent it)
    d._on_approved(stamp("risk.approved", approval(2, tick_ts=time.time_ns() - 60 * 10**9))[0])
    assert len(d.paper.orders) == 1
    rejects = [p for t, p in published(d) if t == "execution.reject"]
    assert len(rejects) == 1 and rejects[0]["reason"].startswith("stale: its tick is 60")
    d._close_files()


def test_the_governor_spaces_orders_to_kites_limits() -> None:
    from daemons.execution.governor import Governor

    g = Governor(per_second=10, per_minute=12, per_day=13)
    for i in range(10):
        assert g.wait(100.0 + i * 0.01) == 0
        g.take(100.0 + i * 0.01)
    assert g.wait(100.1) == pytest.approx(0.9)  # the 11th waits for the first to leave the second
    g.take(101.0)
    g.take(101.0)
    assert g.remaining("minute", 101.0) == 0
    assert g.wait(101.0) == pytest.approx(59.0)  # now the minute is the tighter budget
    g.take(160.0)
    assert g.day_exhausted() and g.remaining("day", 160.0) == 0
    g.new_day()
    assert not g.day_exhausted()


def test_an_order_that_waits_for_the_rate_budget_until_it_is_stale_is_refused_not_sent_late(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Risk may approve faster than Kite's per-minute budget lets orders out: an order still queued when
    its tick passes max_order_age_sec is rejected with the reason (NEW -> REJECTED in the ledger)."""
    from daemons.runtime.envelope import EventFactory

    d = daemon(tmp_path, monkeypatch)
    assert d.paper is not None
    d.paper.on_tick(tick(), 0)
    max_age = d.section.max_order_age_sec
    stamp = EventFactory("risk").stamp

    async def go() -> None:
        for _ in range(int(d.section.orders_per_second)):  # this second's budget is spent
            d.sender.governor.take(time.monotonic())
        d._on_approved(stamp("risk.approved", approval(1, tick_ts=time.time_ns() - int((max_age - 0.3) * 1e9)))[0])
        assert len(d.sender.queue) == 1  # fresh when approved: queued, not refused
        await asyncio.sleep(1.5)  # released once the second has passed: stale by then

    asyncio.run(go())
    assert len(d.paper.orders) == 0
    (order,) = d.orders.values()
    assert order.status == "REJECTED" and order.reason.startswith("stale: waited for the order-rate budget")
    rejects = [p for t, p in published(d) if t == "execution.reject"]
    assert len(rejects) == 1
    d._close_files()


def test_an_order_still_waiting_for_the_rate_budget_at_the_day_roll_is_refused_not_sent_the_next_day(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Orders are for their day: one the governor still held when the day ended is closed in its own day's
    log with the reason, and the next day's budget never sends it."""
    from datetime import timedelta

    from daemons.runtime.envelope import EventFactory

    d = daemon(tmp_path, monkeypatch)
    assert d.paper is not None
    d.paper.on_tick(tick(), 0)
    stamp = EventFactory("risk").stamp

    async def go() -> None:
        for _ in range(int(d.section.orders_per_second)):
            d.sender.governor.take(time.monotonic())
        d._on_approved(stamp("risk.approved", approval(1))[0])
        assert len(d.sender.queue) == 1
        (order,) = d.orders.values()
        await d._roll(DAY + timedelta(days=1))
        assert len(d.sender.queue) == 0 and order.status == "REJECTED"
        assert order.reason.startswith("end of day: it still waited for the order-rate budget")
        await asyncio.sleep(1.2)  # the next second's budget: nothing left to send
        assert d.paper is not None and len(d.paper.orders) == 0 and len(d.orders) == 0

    asyncio.run(go())
    d._close_files()


def test_the_paper_margin_model_refuses_an_order_beyond_the_funds_and_never_an_exit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Funds 100,000, equity at 20%: 400 INFY at 1,000 holds 80,000; 200 more need 40,000 of the 20,000 left
    and are refused before the send, with the reason; selling the 400 adds no exposure and goes."""
    from daemons.runtime.envelope import EventFactory

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    config = FleetConfig.model_validate({"daemons": {"execution": {"latency_ms": 0, "margin": {"funds": 100_000.0}}}})
    d = ExecutionDaemon(config, DaemonMetrics("execution"))
    asyncio.run(d._open_day(DAY))
    stamp = EventFactory("risk").stamp
    d._on_tick(stamp("marketdata.tick", tick(ask=1000.0, qty=1000))[0])
    for n, side, quantity in ((1, "BUY", 400), (2, "BUY", 200), (3, "SELL", 400)):
        d._on_approved(stamp("risk.approved", approval(n, side=side, quantity=quantity))[0])
    assert d.paper is not None and len(d.paper.orders) == 2
    refused = d.orders[client_id("rsi-infy:2026-11-20:2")]
    assert (refused.status, refused.reason) == (
        "REJECTED", "margin: needs 40,000 for 200 INFY, 20,000 available (paper model, funds 100,000)")
    assert d.sender.margin_refusals._value.get() == 1
    assert [p["client_id"] for t, p in published(d) if t == "execution.reject"] == [refused.client_id]
    d._close_files()


@pytest.mark.parametrize("kind, units, price, strike, margin", [
    ("EQ", 100, 1000.0, 0.0, 20_000.0),  # 20% of notional
    ("FUT", -75, 24_000.0, 0.0, 216_000.0),  # 12%, long or short
    ("CE", 75, 120.0, 24_000.0, 9_000.0),  # bought: the premium
    ("PE", -75, 120.0, 24_000.0, 216_000.0),  # sold: 12% of strike x quantity
    ("XX", 10, 50.0, 0.0, 500.0),  # unknown: all of it
])
def test_the_paper_margin_model_per_segment(kind: str, units: int, price: float, strike: float, margin: float) -> None:
    from daemons.execution.margin import PaperMargin
    from daemons.runtime.config import MarginSection

    assert PaperMargin(MarginSection()).needs(kind, units, price, strike) == pytest.approx(margin)


def test_only_what_adds_exposure_needs_margin() -> None:
    from daemons.execution.margin import Exposure, added

    held = Order.from_approved("A", approval(1, quantity=10), "EQ", "NSE", "t")
    held.status, held.filled = "COMPLETE", 10
    working = Order.from_approved("B", approval(2, quantity=5), "EQ", "NSE", "t")  # NEW: counts in full
    sell = Order.from_approved("C", approval(3, side="SELL", quantity=40), "EQ", "NSE", "t")
    flat = Order.from_approved("D", approval(4, side="SELL", quantity=15), "EQ", "NSE", "t")
    exposure = Exposure()
    for order in (held, working, sell):
        exposure.count(order)
    assert added(sell, exposure) == 10  # +15 (filled and working) to -25: 10 more exposure
    without_c = Exposure()
    for order in (held, working, flat):
        without_c.count(order)
    assert added(flat, without_c) == 0  # +15 to 0: an exit adds nothing


def test_the_ledgers_exposure_is_the_days_orders_summed_after_every_change_and_a_restart(tmp_path: Path) -> None:
    """The margin check reads exposure the ledger keeps as it goes; it must equal a pass over the day's
    orders (filled, plus the rest of what works) after any mix of changes, and again after a replay."""
    import random

    from prometheus_client import Counter

    from daemons.execution.broker_types import BrokerOrder, Trade
    from daemons.execution.ledger import Ledger
    from daemons.execution.margin import exposure_of

    def summed(ledger: Ledger) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in ledger.orders.values():
            out[o.symbol] = out.get(o.symbol, 0) + exposure_of(o)
        return out

    illegal = Counter("illegal", "", registry=None)
    ledger = Ledger(tmp_path / "orders.wal", fsync=False, illegal=illegal)
    rng = random.Random(7)
    for n in range(300):
        symbol = rng.choice(["INFY", "TCS", "NIFTYFUT"])
        order = Order.from_approved(f"C{n}", approval(n, symbol=symbol, side=rng.choice(["BUY", "SELL"]),
                                                      quantity=rng.choice([10, 20, 50])), "EQ", "NSE", "t")
        ledger.add(order)
        for live in rng.sample(list(ledger.orders.values()), min(3, len(ledger.orders))):
            step = rng.random()
            if live.status == "NEW":
                status = "REJECTED" if step < 0.2 else "OPEN"
                ledger.answer(live, BrokerOrder(f"B{live.client_id}", live.client_id, live.symbol, live.side,
                                                live.quantity, "MARKET", None, 0, status=status, reason="r"))
            elif live.status == "OPEN" and step < 0.6:
                part = min(live.quantity - live.filled, 10)
                ledger.fill(live, Trade(f"T{live.client_id}-{live.filled}", live.order_id, live.client_id, live.symbol,
                                        live.side, part, 100.0, 0))
            elif live.status == "OPEN":
                ledger.close(live, "CANCELLED", "by the broker")
        assert ledger.exposure.units == summed(ledger)
    ledger.close_file()
    again = Ledger(tmp_path / "orders.wal", fsync=False, illegal=illegal)
    assert again.exposure.units == summed(again) == summed(ledger)
    again.close_file()


def test_a_second_approval_right_after_the_first_waits_for_no_disk_flush(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Paper orders' intents, answers and the paper book's records are written at once (a killed process loses
    none) and fdatasync'ed together SYNC_AFTER_SEC later, not in the handler: a reversal's second approval (or a
    straddle's other leg) waited behind the first's flushes. They still happen, one per file."""
    from daemons.execution import backlog
    from daemons.runtime.envelope import EventFactory

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    monkeypatch.setattr(backlog, "SYNC_AFTER_SEC", 0.2)  # 2 ms: a loaded machine's loop turns could outlast it
    synced: list[str] = []
    real = os.fdatasync

    def recording(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1])
        real(fd)

    async def go() -> None:
        d = ExecutionDaemon(FleetConfig(), DaemonMetrics("execution"))
        await d._open_day(DAY)
        assert d.paper is not None
        d.paper.on_tick(tick(), 0)
        stamp = EventFactory("risk").stamp
        monkeypatch.setattr(os, "fdatasync", recording)
        d._on_approved(stamp("risk.approved", approval(1))[0])
        for _ in range(3):
            await asyncio.sleep(0)  # the turns after the first order's: its answer written, not flushed yet
        d._on_approved(stamp("risk.approved", approval(2))[0])
        assert synced == [], "no flush on the order path"
        assert d.ledger is not None
        assert [r["op"] for r in RecordLog(d.ledger.log.wal.path).records] == ["new", "placed", "new", "placed"]
        await asyncio.sleep(backlog.SYNC_AFTER_SEC * 3)
        assert sorted(synced) == ["broker.jsonl", "orders.wal"], synced  # both orders' intents and answers, once
        assert [o.status for o in d.orders.values()] == ["OPEN", "OPEN"]
        d._close_files()

    asyncio.run(go())
