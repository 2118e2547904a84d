"""algo-execution with ``broker = "kite"`` against the Kite emulator, in this process (the real
kiteconnect client and KiteTicker on loopback): orders placed with their tags, fills from order
updates and polls recorded once, Kite's rejections, reconciliation adopting what Kite has, and a
refused token halting new orders. The same daemon under systemd: tests/systemd/test_live.py."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kiteconnect import KiteConnect

from daemons.execution.clientid import client_id
from daemons.execution.main import ExecutionDaemon
from daemons.execution.orders import Order
from daemons.kite_emulator import Emulator
from daemons.runtime.config import ConfigError, FleetConfig
from daemons.runtime.envelope import EventFactory
from daemons.runtime.metrics import DaemonMetrics
from daemons.runtime.wal import RecordLog
from tests.helpers import unsent_frames

INFY = 408065
stamp = EventFactory("test").stamp


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(heartbeat_interval=0.2) as em:
        em.add_instrument("NSE", "INFY", INFY)
        em.set_price("NSE:INFY", 1500.0)
        yield em


def live_config(emulator: Emulator, token: str | None = None, **execution: Any) -> FleetConfig:
    return FleetConfig.model_validate({
        "fleet": {"mode": "live"},
        "kite": {"api_key": emulator.api_key, "access_token": token or emulator.access_token,
                 "root": emulator.root, "ticker_root": emulator.ws_url, "timeout_sec": 2},
        "daemons": {"execution": {"broker": "kite", "poll_sec": 0.2, **execution}},
    })


def approval(n: int, side: str = "BUY", quantity: int = 10, **over: Any) -> dict[str, Any]:
    return {"engine": "equity", "strategy": "rsi-infy", "symbol": "INFY", "side": side, "quantity": quantity,
            "order_type": "MARKET", "limit_price": None, "signal_id": f"rsi-infy:live:{n}",
            "tick_ts": time.time_ns(), **over}


def tag(n: int) -> str:
    return client_id(f"rsi-infy:live:{n}")


def published(d: ExecutionDaemon, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(f.body)["payload"] for f in unsent_frames(d.bus) if f.topic.decode() == topic]


async def eventually(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def running(config: FleetConfig, body: Callable[[ExecutionDaemon], Awaitable[None]]) -> ExecutionDaemon:
    """setup() (reconciliation), run() with its poll, the body, then a clean stop."""
    d = ExecutionDaemon(config, DaemonMetrics("execution"))
    await d.setup()
    runner = asyncio.create_task(d.run())
    try:
        d._on_tick(stamp("marketdata.tick", {"symbol": "INFY", "exchange": "NSE", "type": "EQ"})[0])
        await body(d)
    finally:
        d.stopping.set()
        await runner
        await d.drain()
    return d


def kite_orders(emulator: Emulator) -> Counter[str]:
    return Counter(o["tag"] for o in emulator.book.orders())


def test_orders_fill_partially_get_rejected_and_positions_match_kite(
        emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    emulator.add_rule(tag=tag(1), slices=[4])
    emulator.add_rule(tag=tag(3), reject="RMS:Margin Exceeds, Required:15000.00, Available:0.00")

    async def session(d: ExecutionDaemon) -> None:
        d._on_approved(stamp("risk.approved", approval(1))[0])
        d._on_approved(stamp("risk.approved", approval(2, "SELL", 3))[0])
        d._on_approved(stamp("risk.approved", approval(3))[0])
        d._on_approved(stamp("risk.approved", approval(4, symbol="NOSUCH"))[0])  # no facts, never ticked: it waits
        await eventually(lambda: d.orders[tag(1)].filled == 4 and d.orders[tag(3)].status == "REJECTED"
                         and d.orders[tag(2)].status == "COMPLETE", "the partial fill, the RMS rejection and order 2")
        emulator.set_price("NSE:INFY", 1502.0)  # the rest of order 1 trades
        await eventually(lambda: d.orders[tag(1)].status == "COMPLETE", "order 1 complete")

    d = asyncio.run(running(live_config(emulator), session))
    assert kite_orders(emulator) == {tag(1): 1, tag(2): 1, tag(3): 1}
    assert {t: (o.status, o.filled) for t, o in d.orders.items()} == {
        tag(1): ("COMPLETE", 10), tag(2): ("COMPLETE", 3), tag(3): ("REJECTED", 0), tag(4): ("NEW", 0)}
    assert d.sender.instruments.waiting == 1 and "1 waiting for a first tick" in d.status()  # not sent with a guessed exchange
    assert d.orders[tag(3)].reason.startswith("RMS:Margin Exceeds")
    fills = published(d, "execution.fill")
    assert sorted(f["quantity"] for f in fills if f["client_id"] == tag(1)) == [4, 6]
    assert len({f["fill_id"] for f in fills}) == len(fills) == 3, "each fill published once"
    rejects = published(d, "execution.reject")
    assert {r["client_id"] for r in rejects} == {tag(3)}
    net: Counter[str] = Counter()
    for f in fills:
        net[f"NSE:{f['symbol']}"] += f["quantity"] if f["side"] == "BUY" else -f["quantity"]
    positions = {f"{p['exchange']}:{p['tradingsymbol']}": p["quantity"] for p in emulator.book.positions()["net"]}
    assert positions == dict(net) == {"NSE:INFY": 7}

    # A restart: everything is reconciled from the log and Kite's book; nothing is placed again.
    again = asyncio.run(running(live_config(emulator), lambda d: asyncio.sleep(0.5)))
    assert kite_orders(emulator) == {tag(1): 1, tag(2): 1, tag(3): 1}
    assert {t: (o.status, o.filled) for t, o in again.orders.items()} == {
        t: (o.status, o.filled) for t, o in d.orders.items()}
    assert again.sender.instruments.waiting == 1, "logged, never sent: at the restart it waits again for a tick of NOSUCH"


def test_a_lost_reply_is_adopted_live_and_at_a_restart_never_placed_twice(
        emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kite took the order, its reply never came: the order update (or the poll) adopts it while
    the place call is still waiting; and after a crash between the log and the reply, the
    restart's reconciliation adopts what Kite has."""
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    emulator.faults.swallow_replies(1)

    async def swallowed(d: ExecutionDaemon) -> None:
        d._on_approved(stamp("risk.approved", approval(1))[0])
        await eventually(lambda: emulator.held_replies == 1, "Kite to take the order and hold the reply")
        await eventually(lambda: d.orders[tag(1)].status == "COMPLETE", "the order update to adopt it")
        await eventually(lambda: d.kite is not None and not d.kite.sends,
                         "the place call to give up on the reply and find the tag")

    asyncio.run(running(live_config(emulator), swallowed))
    assert kite_orders(emulator) == {tag(1): 1}
    wal = RecordLog(tmp_path / next(p.name for p in tmp_path.iterdir() if p.is_dir()) / "orders.wal")
    assert [r["op"] for r in wal.records if r["client_id"] == tag(1)] == ["new", "placed", "fill"]

    # A crash after the log, before the reply: the log says NEW, Kite has the order.
    wal.append(Order.from_approved(tag(2), approval(2), "EQ", "NSE", "trace-2").intent())
    wal.close()
    KiteConnect(emulator.api_key, emulator.access_token, root=emulator.root).place_order(
        "regular", "NSE", "INFY", "BUY", 10, "MIS", "MARKET", tag=tag(2))
    again = asyncio.run(running(live_config(emulator), lambda d: asyncio.sleep(0.3)))
    assert kite_orders(emulator) == {tag(1): 1, tag(2): 1}
    assert again.orders[tag(2)].status == "COMPLETE" and again.orders[tag(2)].filled == 10
    assert again.reconciled.labels("adopted")._value.get() == 1


def test_a_refused_token_halts_new_orders_and_a_new_token_trades_again(
        emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))

    async def expiry(d: ExecutionDaemon) -> None:
        d._on_approved(stamp("risk.approved", approval(1))[0])
        await eventually(lambda: d.orders[tag(1)].status == "COMPLETE", "the first order to fill")
        emulator.expire_tokens()
        await eventually(lambda: bool(d.sender.halted), "the poll to find the token refused")
        d._on_approved(stamp("risk.approved", approval(2))[0])
        assert d.kite is not None and d.kite.client.token_expiry_seconds() <= 0
        assert d.status().startswith("HALTED")

    d = asyncio.run(running(live_config(emulator), expiry))
    assert tag(2) not in d.orders and kite_orders(emulator) == {tag(1): 1}
    [halt] = [r for r in caplog.records if r.levelname == "CRITICAL"]
    assert "new orders are halted until `algoctl login`" in halt.getMessage()
    assert emulator.access_token not in caplog.text

    with pytest.raises(ConfigError, match=r"kite.access_token: .*algoctl login"):  # a restart before the login
        asyncio.run(running(live_config(emulator), lambda d: asyncio.sleep(0)))
    fresh = KiteConnect(emulator.api_key, root=emulator.root).generate_session(
        "morning-request-token", api_secret=emulator.api_secret)["access_token"]

    async def trades_again(d: ExecutionDaemon) -> None:
        d._on_approved(stamp("risk.approved", approval(3))[0])
        await eventually(lambda: d.orders[tag(3)].status == "COMPLETE", "an order with the new token")

    again = asyncio.run(running(live_config(emulator, token=fresh), trades_again))
    assert not again.sender.halted and again.orders[tag(1)].status == "COMPLETE"
    assert kite_orders(emulator) == {tag(1): 1, tag(3): 1}


def test_live_execution_without_a_token_refuses_to_start_naming_it(
        emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    full = live_config(emulator)
    config = full.model_copy(update={"kite": full.kite.model_copy(update={"access_token": None})})
    with pytest.raises(ConfigError) as err:
        asyncio.run(ExecutionDaemon(config, DaemonMetrics("execution")).setup())
    assert [str(p) for p in err.value.problems] == [
        "kite.access_token: Kite needs it: install the systemd credential kite_access_token (`algoctl login` "
        "installs it every morning; algoctl takes --credentials DIR)"]


@pytest.mark.parametrize("broker", ["kite", "paper"])
def test_with_kite_execution_needs_only_the_newest_tick_per_instrument_the_paper_broker_every_one(
        emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broker: str) -> None:
    """A burst of 100 ticks of one instrument: the Kite side reads the newest (99 conflated, counted);
    the paper broker fills on ticks, so it reads all 100."""
    from daemons.runtime import wire
    from daemons.runtime.transport import UnixTransport

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    config = live_config(emulator) if broker == "kite" else FleetConfig()
    factory = EventFactory("marketdata")
    frames = []
    for n in range(100):
        _, body = factory.stamp("marketdata.tick", {"symbol": "INFY", "exchange": "NSE", "type": "EQ", "n": n}, key="408065")
        frames.append(wire.encode(wire.PUBLISH, b"marketdata.tick", body, b"408065"))

    async def go() -> ExecutionDaemon:
        d = ExecutionDaemon(config, DaemonMetrics("execution"))
        transport = d.bus.transport
        assert isinstance(transport, UnixTransport)
        transport.data_received(b"".join(frames))
        for _ in range(20):
            await asyncio.sleep(0)
        return d

    d = asyncio.run(go())
    assert d.bus.conflated == (99 if broker == "kite" else 0)
    facts = d.sender.instruments.get("INFY")
    assert facts is not None and (facts.type, facts.exchange) == ("EQ", "NSE")


def test_an_order_needing_more_margin_than_kite_has_is_refused_before_it_is_sent(
        emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kite's order-margins API (the emulator: 20% of an NSE order's value) against the account's 412,380.50
    available: 2,000 INFY at 1,500 needs 600,000 and is refused with the reason; 1,000 (300,000) goes, and
    so does its exit, which adds no exposure and needs no margin call."""
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))

    async def session(d: ExecutionDaemon) -> None:
        d._on_approved(stamp("risk.approved", approval(1, quantity=2000))[0])
        d._on_approved(stamp("risk.approved", approval(2, quantity=1000))[0])
        d._on_approved(stamp("risk.approved", approval(3, "SELL", 1000))[0])
        await eventually(lambda: d.orders[tag(1)].status == "REJECTED" and d.orders[tag(3)].status == "COMPLETE",
                         "the refusal and the exit")

    d = asyncio.run(running(live_config(emulator), session))
    assert kite_orders(emulator) == {tag(2): 1, tag(3): 1}, "the refused order never reached Kite"
    assert d.orders[tag(1)].reason == "margin: Kite says 600,000 is needed for 2000 INFY, 412,380 available"
    assert d.sender.margin_refusals._value.get() == 1
    assert [r["client_id"] for r in published(d, "execution.reject")] == [tag(1)]
    off = asyncio.run(running(live_config(emulator, margin={"check": False}), lambda d: asyncio.sleep(0)))
    assert off.sender.margin_refusals._value.get() == 0


def test_an_intent_is_on_disk_before_kite_hears_of_the_order_and_a_refused_flush_sends_nothing(
        emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The intent is written in the approval's handler and flushed (fdatasync) right before the place call: Kite
    never has an order a power cut could take from the log. A disk that refuses the flush: not sent, refused
    with the reason."""
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    at_place: list[tuple[str, bool, list[str]]] = []

    async def session(d: ExecutionDaemon) -> None:
        assert d.kite is not None and d.ledger is not None
        place, wal = d.kite.client.place, d.ledger.log.wal

        async def watched(tag_: str, *args: Any, **kw: Any) -> Any:
            at_place.append((tag_, wal.unsynced, [r["client_id"] for r in RecordLog(wal.path).records]))
            return await place(tag_, *args, **kw)

        monkeypatch.setattr(d.kite.client, "place", watched)
        d._on_approved(stamp("risk.approved", approval(1))[0])
        assert wal.unsynced, "written in the handler, not flushed there"
        await eventually(lambda: d.orders[tag(1)].status == "COMPLETE", "order 1 complete")

        def refused(fd: int) -> None:
            raise OSError(5, "Input/output error")

        real = os.fdatasync
        monkeypatch.setattr(os, "fdatasync", refused)
        d._on_approved(stamp("risk.approved", approval(2))[0])
        await eventually(lambda: d.orders[tag(2)].status == "REJECTED", "order 2 refused")
        monkeypatch.setattr(os, "fdatasync", real)

    d = asyncio.run(running(live_config(emulator), session))
    assert at_place == [(tag(1), False, [tag(1)])], "flushed before the place call, never called for order 2"
    assert kite_orders(emulator) == {tag(1): 1}
    assert d.orders[tag(2)].reason == ("state disk: the order's intent cannot be flushed to the write-ahead log "
                                       "(Input/output error); not sent")
