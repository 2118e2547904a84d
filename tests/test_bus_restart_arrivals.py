"""A restarted broker's first seconds: what the first clients back publish reaches those still
reconnecting (a fill risk must count, an approval the journal must record), once, and only those
that say they are reconnecting; a new subscription starts now."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from daemons.bus import sessions
from daemons.runtime import wire

from .test_bus import client, read_until_quiet, run, start_broker, until


async def raw(path: Path, name: str, *patterns: bytes, again: bool) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await asyncio.get_running_loop().sock_connect(sock, str(path))
    sock.sendall(b"".join([wire.encode(wire.HELLO, name.encode(), b"{}", wire.AGAIN if again else b""),
                           *(wire.encode(wire.SUBSCRIBE, p) for p in patterns)]))
    return sock


def fills(frames: list[wire.Frame]) -> list[bytes]:
    return [f.topic for f in frames]


def test_a_client_back_after_a_broker_restart_gets_what_it_missed_once(tmp_path: Path) -> None:
    async def go(path: Path) -> None:
        broker = await start_broker(path)
        execution = await client(path, "execution")  # back first: its fill and a tick reach no subscriber
        execution.publish("execution.fill", {"fill_id": "F1"})
        execution.publish("marketdata.tick", {"symbol": "INFY"}, key="1|INFY|")
        await until(lambda: broker.stats.published[b"execution.fill"] == 1)
        risk = await raw(path, "risk", b"execution.*", b"execution.fill", b"marketdata.tick", again=True)
        watcher = await raw(path, "watcher", b"execution.*", again=False)  # a new subscription starts now
        got = await read_until_quiet(risk, 0.3)
        assert fills(got) == [b"execution.fill"]  # once, though two of its patterns match; no stale tick
        assert got[0].body.count(b"F1") == 1
        assert await read_until_quiet(watcher, 0.2) == []

        # risk drops and comes back to the same broker: what it missed meanwhile comes from its session,
        # and nothing it had already comes twice
        risk.close()
        await until(lambda: len(broker.peers) == 2)
        execution.publish("execution.fill", {"fill_id": "F2"})
        await until(lambda: broker.stats.published[b"execution.fill"] == 2)
        risk = await raw(path, "risk", b"execution.*", again=True)
        got = await read_until_quiet(risk, 0.3)
        assert [f.body.count(b"F2") for f in got] == [1]
        assert [f.topic for f in await read_until_quiet(watcher, 0.2)] == [b"execution.fill"]  # F2 only

    run(go, tmp_path)


def test_after_the_first_seconds_nothing_old_is_handed_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions, "EARLY_SEC", 0.2)

    async def go(path: Path) -> None:
        broker = await start_broker(path)
        execution = await client(path, "execution")
        execution.publish("execution.fill", {"fill_id": "F1"})
        await until(lambda: broker.stats.published[b"execution.fill"] == 1)
        await asyncio.sleep(0.3)
        execution.publish("execution.fill", {"fill_id": "F2"})  # closes the window for good
        late = await raw(path, "risk", b"execution.*", again=True)
        assert await read_until_quiet(late, 0.2) == []
        assert not broker.arrivals.open and broker.arrivals.events == []

    run(go, tmp_path)


def test_a_reconnecting_client_says_so_in_its_hello() -> None:
    from daemons.runtime.client import BusClient
    from daemons.runtime.config import BusSection
    from daemons.runtime.transport import UnixTransport

    bus = BusClient.for_config(BusSection(socket=Path("/nonexistent")), "risk")
    transport = bus.transport
    assert isinstance(transport, UnixTransport)
    (first,) = wire.FrameReader(1 << 20).feed(transport.hello)
    (again,) = wire.FrameReader(1 << 20).feed(transport._hello_again())
    assert (first.topic, first.key) == (b"risk", b"")
    assert (again.topic, again.key, again.body) == (b"risk", wire.AGAIN, first.body)
