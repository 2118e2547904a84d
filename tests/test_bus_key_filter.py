"""Key-filtered market data: the broker sends a subscriber only the ticks whose key names one of its
instruments (token, symbol or underlying), the filter can change on the fly and survives a reconnect,
the skipped ticks are not gaps, and a bad filter is the sender's protocol error."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from daemons.runtime import wire
from daemons.runtime.client import BusClient
from daemons.runtime.config import BusSection
from daemons.runtime.envelope import Event, tick_key

from .test_bus import client, run, start_broker, until

# (token, symbol, underlying): two NIFTY options, the index itself, and two stocks
INSTRUMENTS = [(1, "NIFTY26DEC24000CE", "NIFTY"), (2, "NIFTY26DEC24000PE", "NIFTY"), (3, "NIFTY 50", ""),
               (4, "INFY", ""), (5, "RELIANCE", "")]


def tick(n: int) -> dict[str, object]:
    token, symbol, underlying = INSTRUMENTS[n % len(INSTRUMENTS)]
    return {"token": token, "symbol": symbol, "underlying": underlying, "i": n}


def publish_ticks(pub: BusClient, numbers: range) -> None:
    for n in numbers:
        t = tick(n)
        pub.publish("marketdata.tick", t, key=tick_key(t))


def symbols(events: list[Event]) -> set[str]:
    return {e.payload["symbol"] for e in events}


def test_a_filtered_subscriber_gets_only_the_ticks_it_names(tmp_path: Path) -> None:
    async def go(path: Path) -> None:
        broker = await start_broker(path)
        every, options = list[Event](), list[Event]()
        whole = await client(path, "journal")
        whole.subscribe("marketdata.tick", every.append)
        engine = await client(path, "options")
        engine.subscribe("marketdata.tick", options.append)
        engine.filter_keys("marketdata.tick", frozenset({"NIFTY", "INFY"}))  # an underlying and a symbol
        pub = await client(path, "marketdata")
        await asyncio.sleep(0.05)
        publish_ticks(pub, range(500))
        await until(lambda: len(every) == 500)
        await until(lambda: len(options) == 300)
        assert symbols(options) == {"NIFTY26DEC24000CE", "NIFTY26DEC24000PE", "INFY"}
        assert [e.payload["i"] for e in options] == [n for n in range(500) if n % 5 in (0, 1, 3)]  # in order
        assert engine.gaps == 0 and whole.gaps == 0  # skipped by the filter is not lost
        assert broker.stats.filtered == 200  # counted as asked for, not as dropped
        assert sum(broker.stats.dropped.values()) == 0

        # A new filter replaces the old one; None is every tick again.
        engine.filter_keys("marketdata.tick", frozenset({"RELIANCE"}))
        await asyncio.sleep(0.05)
        options.clear()
        publish_ticks(pub, range(500, 510))
        await until(lambda: len(options) == 2)
        assert symbols(options) == {"RELIANCE"}
        engine.filter_keys("marketdata.tick", None)
        await asyncio.sleep(0.05)
        options.clear()
        publish_ticks(pub, range(510, 520))
        await until(lambda: len(options) == 10)

    run(go, tmp_path)


def test_the_filter_survives_a_broker_restart_and_an_empty_filter_gets_nothing(tmp_path: Path) -> None:
    async def go(path: Path) -> None:
        broker = await start_broker(path)
        got, risk_marks = list[Event](), list[Event]()
        engine = await client(path, "fno", reconnect_min_sec=0.01, reconnect_max_sec=0.05)
        engine.subscribe("marketdata.tick", got.append)
        engine.filter_keys("marketdata.tick", frozenset({"INFY"}))
        risk = await client(path, "risk", reconnect_min_sec=0.01, reconnect_max_sec=0.05)
        risk.subscribe("marketdata.tick", risk_marks.append, latest_only=True)
        risk.filter_keys("marketdata.tick", frozenset())  # no positions yet: no ticks
        await broker.close(grace=0.05)
        broker = await start_broker(path)
        await until(lambda: engine.connected and risk.connected)
        pub = await client(path, "marketdata")
        await asyncio.sleep(0.1)
        publish_ticks(pub, range(50))
        await until(lambda: len(got) == 10)
        await asyncio.sleep(0.1)
        assert symbols(got) == {"INFY"} and risk_marks == []

    run(go, tmp_path)


@pytest.mark.parametrize(("pattern", "body", "why"), [
    (b"risk.approved", b'["INFY"]', "for market data"),
    (b"marketdata.tick", b"INFY", "not JSON"),
    (b"marketdata.tick", b'{"INFY": 1}', "not a list"),
    (b"marketdata.tick", b'["A|B"]', "not a list"),
    (b"marketdata.tick", b'[""]', "not a list"),
])
def test_a_bad_filter_drops_its_sender_and_no_one_else(tmp_path: Path, pattern: bytes, body: bytes, why: str) -> None:
    async def go(path: Path) -> None:
        broker = await start_broker(path)
        got = list[Event]()
        good = await client(path, "fno")
        good.subscribe("marketdata.tick", got.append)
        bad = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await asyncio.get_running_loop().sock_connect(bad, str(path))
        bad.sendall(wire.encode(wire.SUBSCRIBE, pattern, body))
        await until(lambda: broker.stats.protocol_errors["malformed"] == 1)
        assert bad.recv(1) == b""  # dropped
        pub = await client(path, "marketdata")
        await asyncio.sleep(0.05)
        pub.publish("marketdata.tick", tick(3), key=tick_key(tick(3)))
        await until(lambda: len(got) == 1)
        bad.close()

    run(go, tmp_path)


@pytest.mark.parametrize(("pattern", "names", "why"), [
    ("risk.approved", frozenset({"INFY"}), "for market data"),
    ("marketdata.tick", frozenset({"A|B"}), "without '|'"),
    ("marketdata.tick", frozenset({""}), "non-empty"),
])
def test_the_client_refuses_a_filter_the_broker_would(tmp_path: Path, pattern: str, names: frozenset[str], why: str) -> None:
    bus = BusClient.for_config(BusSection(socket=tmp_path / "bus.sock"), "fno")
    with pytest.raises(ValueError, match=why):
        bus.filter_keys(pattern, names)
