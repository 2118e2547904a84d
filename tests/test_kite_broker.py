"""The live broker adapter against the Kite emulator, through the real kiteconnect client on loopback:
the order lifecycle, 429 storms, lost and slow place replies, token expiry and a new login, and
order updates from the real KiteTicker."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from kiteconnect import KiteConnect, KiteTicker
from twisted.internet.threads import blockingCallFromThread

from daemons.algoctl.login import CREDENTIAL, install_token, login, read_credential
from daemons.execution.kite_broker import KiteBroker, OrderUpdate, Refused, TokenExpired, token_expiry
from daemons.kite_emulator import Emulator
from daemons.runtime import kite_ticker
from daemons.runtime.calendar import IST
from daemons.runtime.kite_ticker import ensure_reactor
from tests.helpers import wait_until

INFY = 408065
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 20) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(heartbeat_interval=0.2) as em:
        em.add_instrument("NSE", "INFY", INFY)
        em.set_price("NSE:INFY", 1500.0)
        yield em


@pytest.fixture(scope="module")
def reactor() -> Any:
    """Twisted's one reactor, in a daemon thread (it cannot be restarted; see tests/kite_emulator)."""
    ensure_reactor()
    wait_until(lambda: kite_ticker.reactor.running, 5, "the Twisted reactor")
    return kite_ticker.reactor


def make_broker(emulator: Emulator, on_update: Callable[[OrderUpdate], None] = lambda u: None, *,
                token: str | None = None, timeout: float = 3.0, client: type[KiteConnect] = KiteConnect,
                **kwargs: Any) -> KiteBroker:
    def connect() -> KiteConnect:
        return client(emulator.api_key, token or emulator.access_token, root=emulator.root, timeout=timeout)

    kwargs.setdefault("backoff_sec", 0.05)
    return KiteBroker(connect, on_update, product="MIS", market_protection=-1, **kwargs)


def orders_by_tag(emulator: Emulator) -> Counter[str]:
    """What Kite has: the ground truth for 'none lost, none placed twice'."""
    return Counter(o["tag"] for o in emulator.book.orders())


def summary(updates: list[OrderUpdate]) -> list[tuple[str, str, int, list[int]]]:
    return [(u.order.tag, u.order.status, u.order.filled, [t.quantity for t in u.trades]) for u in updates]


def test_order_lifecycle_with_a_partial_fill_and_rejections(emulator: Emulator) -> None:
    emulator.add_rule(tag="PARTIAL", slices=[4])
    emulator.add_rule(tag="RMS", reject="RMS:Margin Exceeds, Required:1500.00, Available:0.00")
    updates: list[OrderUpdate] = []

    async def scenario() -> None:
        broker = make_broker(emulator, updates.append)
        await broker.start()
        try:
            partial = await broker.place("PARTIAL", "NSE:INFY", "BUY", 10, "MARKET")
            assert (partial.status, partial.symbol, partial.price) == ("OPEN", "NSE:INFY", None) and partial.order_id
            limit = await broker.place("LIMITSELL", "INFY", "SELL", 5, "LIMIT", 1600.0, exchange="NSE")
            await broker.modify(limit.order_id, quantity=10, price=1650.0)
            await broker.cancel(limit.order_id)
            with pytest.raises(Refused, match="CANCELLED"):
                await broker.cancel(limit.order_id)
            rms = await broker.place("RMS", "NSE:INFY", "BUY", 1, "MARKET")
            assert rms.status == "OPEN"  # accepted; Kite's RMS rejects it after
            unknown = await broker.place("UNKNOWN", "NSE:NOSUCH", "BUY", 1, "MARKET")
            assert (unknown.status, unknown.order_id) == ("REJECTED", "")
            assert "not in the instruments list" in unknown.reason  # Kite's own message

            await broker.poll()
            assert summary(updates) == [("PARTIAL", "OPEN", 4, [4]), ("LIMITSELL", "CANCELLED", 0, []),
                                        ("RMS", "REJECTED", 0, [])]
            assert updates[2].order.reason.startswith("RMS:Margin Exceeds")
            emulator.set_price("NSE:INFY", 1501.0)  # the rest of PARTIAL trades
            book = await broker.poll()
            assert summary(updates[3:]) == [("PARTIAL", "COMPLETE", 10, [6])]
            await broker.poll()
            assert len(updates) == 4  # nothing new: nothing reported twice
        finally:
            await broker.close()

        assert set(book.by_tag) == {"PARTIAL", "LIMITSELL", "RMS"}
        done = book.find("PARTIAL")
        assert done is not None and (done.status, done.filled, done.average) == ("COMPLETE", 10, 1500.6)
        assert [t.quantity for t in book.trades_of(done.order_id)] == [4, 6]
        cancelled = book.find("LIMITSELL")
        assert cancelled is not None and (cancelled.quantity, cancelled.price) == (10, 1650.0)
        assert book.orders[done.order_id] == done
        net = Counter[str]()
        value: dict[str, float] = {}
        for t in book.trades:
            net[t.symbol] += t.quantity if t.side == "BUY" else -t.quantity
            value[t.symbol] = value.get(t.symbol, 0.0) + t.quantity * t.price * (1 if t.side == "BUY" else -1)
        kite = KiteConnect(emulator.api_key, emulator.access_token, root=emulator.root)
        positions = {f"{p['exchange']}:{p['tradingsymbol']}": p for p in kite.positions()["net"]}
        assert {s: p["quantity"] for s, p in positions.items()} == dict(net)
        assert {s: p["buy_value"] - p["sell_value"] for s, p in positions.items()} == pytest.approx(dict(value))

    run(scenario())
    [sent] = [o for o in emulator.book.orders() if o["tag"] == "PARTIAL"]
    assert sent["product"] == "MIS" and "mktp:2.00" in sent["tags"]  # market protection -1: Kite's automatic band


def test_a_429_storm_is_waited_out_and_no_order_is_lost_or_doubled(emulator: Emulator) -> None:
    tags = [f"STORM{i}" for i in range(4)]

    async def scenario() -> KiteBroker:
        broker = make_broker(emulator)
        await broker.start()
        try:
            emulator.faults.rate_limit(count=8)
            started = time.monotonic()
            placed = await asyncio.gather(*(broker.place(tag, "NSE:INFY", "BUY", 1, "MARKET") for tag in tags))
            assert all(p.status == "OPEN" for p in placed)
            # 8 refusals over 4 orders: one order met at least 2 of them, and waited 0.05 + 0.1 s
            assert time.monotonic() - started >= 0.15
            assert broker.stats["rate_limited"] == 8

            emulator.faults.rate_limit(seconds=0.6, prefix="/orders")
            started = time.monotonic()
            assert (await broker.place("STORMLONG", "NSE:INFY", "SELL", 1, "MARKET")).status == "OPEN"
            assert time.monotonic() - started >= 0.6
        finally:
            await broker.close()
        return broker

    broker = run(scenario())
    assert orders_by_tag(emulator) == Counter({tag: 1 for tag in [*tags, "STORMLONG"]})
    assert broker.stats["ambiguous"] == 0  # a 429 is a clear "not taken": no lookup needed


def test_a_lost_or_late_place_reply_is_adopted_by_tag_not_placed_again(emulator: Emulator) -> None:
    async def scenario() -> KiteBroker:
        broker = make_broker(emulator, timeout=0.5)
        await broker.start()
        try:
            emulator.faults.swallow_replies(count=1)  # Kite booked it; the reply never comes
            swallowed = await broker.place("SWALLOWED", "NSE:INFY", "BUY", 2, "MARKET")
            emulator.faults.slow(1.5, count=1, prefix="/orders/regular")  # the reply comes after our timeout
            slow = await broker.place("SLOWREPLY", "NSE:INFY", "BUY", 3, "MARKET")
        finally:
            await broker.close()
        ids = {o["tag"]: o["order_id"] for o in emulator.book.orders()}
        assert (swallowed.order_id, swallowed.status, swallowed.filled) == (ids["SWALLOWED"], "COMPLETE", 2)
        assert (slow.order_id, slow.filled) == (ids["SLOWREPLY"], 3)
        return broker

    broker = run(scenario())
    assert orders_by_tag(emulator) == Counter({"SWALLOWED": 1, "SLOWREPLY": 1})
    assert (broker.stats["ambiguous"], broker.stats["adopted"], broker.stats["resent"]) == (2, 2, 0)
    wait_until(lambda: emulator.held_replies == 0, 5, "the held reply to be released by our timeout")


def test_a_place_that_never_reached_kite_is_looked_up_then_sent_once(emulator: Emulator) -> None:
    failures = [requests.ConnectionError("connection reset")]

    class Flaky(KiteConnect):
        def place_order(self, *args: Any, **kwargs: Any) -> str:
            if failures:
                raise failures.pop()
            return str(super().place_order(*args, **kwargs))

    async def scenario() -> KiteBroker:
        broker = make_broker(emulator, client=Flaky)
        await broker.start()
        try:
            assert (await broker.place("NEVERSENT", "NSE:INFY", "BUY", 1, "MARKET")).status == "OPEN"
        finally:
            await broker.close()
        return broker

    broker = run(scenario())
    assert orders_by_tag(emulator) == Counter({"NEVERSENT": 1})
    assert (broker.stats["ambiguous"], broker.stats["adopted"], broker.stats["resent"]) == (1, 0, 1)


def test_a_cancel_whose_reply_was_lost_is_checked_not_sent_again(emulator: Emulator) -> None:
    lost = [requests.ReadTimeout("read timed out")]

    class LostReply(KiteConnect):
        def cancel_order(self, *args: Any, **kwargs: Any) -> str:
            order_id = str(super().cancel_order(*args, **kwargs))  # Kite cancels it...
            if lost:
                raise lost.pop()  # ...and the answer never arrives
            return order_id

    async def scenario() -> None:
        broker = make_broker(emulator, client=LostReply)
        await broker.start()
        try:
            order = await broker.place("TOCANCEL", "NSE:INFY", "SELL", 1, "LIMIT", 1600.0)
            await broker.cancel(order.order_id)  # a second cancel would be refused: "it is CANCELLED"
            found = await broker.find("TOCANCEL")
            assert found is not None and found.status == "CANCELLED"
        finally:
            await broker.close()

    run(scenario())
    assert lost == []


def test_token_expiry_raises_token_expired_until_a_new_login(emulator: Emulator, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def expired() -> None:
        broker = make_broker(emulator)
        await broker.start()
        try:
            assert 0 < broker.token_expiry_seconds() <= 86_400
            emulator.expire_tokens()
            with pytest.raises(TokenExpired, match="algoctl login"):
                await broker.place("EXPIRED", "NSE:INFY", "BUY", 1, "MARKET")
            assert broker.token_expiry_seconds() <= 0
            with pytest.raises(TokenExpired):
                await broker.poll()
        finally:
            await broker.close()

    run(expired())
    token = login(emulator.api_key, emulator.api_secret, "morning-request-token", emulator.root)
    install_token(token, tmp_path / "credentials", encrypt=False)

    async def renewed() -> str:
        broker = make_broker(emulator, token=read_credential(CREDENTIAL, tmp_path / "credentials"))
        await broker.start()
        try:
            assert broker.token_expiry_seconds() > 0
            return (await broker.place("AFTERLOGIN", "NSE:INFY", "BUY", 1, "MARKET")).status
        finally:
            await broker.close()

    assert run(renewed()) == "OPEN"
    assert orders_by_tag(emulator) == Counter({"AFTERLOGIN": 1})
    for secret in (token, emulator.access_token, emulator.api_secret, "morning-request-token"):
        assert secret not in caplog.text


@pytest.mark.parametrize(("ist", "seconds"), [("2026-11-20 05:59:00", 60), ("2026-11-20 06:00:00", 86_400),
                                              ("2026-11-20 23:00:00", 7 * 3600)])
def test_tokens_expire_at_the_next_0600_ist(ist: str, seconds: int) -> None:
    at = datetime.strptime(ist, "%Y-%m-%d %H:%M:%S").replace(tzinfo=IST).timestamp()
    assert token_expiry(at) - at == seconds


def test_ticker_order_updates_arrive_normalized_on_the_loop(emulator: Emulator, reactor: Any) -> None:
    emulator.add_rule(tag="TICKER1", slices=[3])
    updates: list[OrderUpdate] = []
    threads: set[int] = set()

    async def scenario() -> str:
        loop_thread = threading.get_ident()
        part_filled, complete = asyncio.Event(), asyncio.Event()

        def on_update(update: OrderUpdate) -> None:
            updates.append(update)
            threads.add(threading.get_ident())
            if update.order.status == "COMPLETE":
                complete.set()
            elif update.order.filled:
                part_filled.set()

        broker = make_broker(emulator, on_update)
        await broker.start()
        ticker = KiteTicker(emulator.api_key, emulator.access_token, root=emulator.ws_url)
        ticker.on_order_update = lambda ws, data: broker.on_order_update(data)
        await asyncio.to_thread(blockingCallFromThread, reactor, ticker.connect)
        try:
            await asyncio.to_thread(wait_until, lambda: emulator.subscriptions() == [{}], 5, "the ticker connection")
            placed = await broker.place("TICKER1", "NSE:INFY", "BUY", 10, "MARKET")
            await asyncio.wait_for(part_filled.wait(), 5)
            await asyncio.to_thread(emulator.set_price, "NSE:INFY", 1502.0)
            await asyncio.wait_for(complete.wait(), 5)
            await broker.poll()  # the same orders and trades, polled: nothing new to report
        finally:
            await asyncio.to_thread(blockingCallFromThread, reactor, ticker.close)
            await broker.close()
        assert threads == {loop_thread}
        return placed.order_id

    order_id = run(scenario())
    assert summary(updates) == [("TICKER1", "OPEN", 0, []), ("TICKER1", "OPEN", 3, [3]),
                                ("TICKER1", "COMPLETE", 10, [7])]
    last = updates[-1]
    assert (last.order.order_id, last.order.symbol, last.order.side) == (order_id, "NSE:INFY", "BUY")
    assert last.order.average == pytest.approx((3 * 1500.0 + 7 * 1502.0) / 10)
    assert [(t.order_id, t.tag, t.price) for t in last.trades] == [(order_id, "TICKER1", 1502.0)]
    assert all(t.exchange_ts > 0 for u in updates for t in u.trades)
