"""Broker and client over a real Unix socket, in one event loop (no systemd needed)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from daemons.bus.broker import Broker
from daemons.bus.listen import bind_socket
from daemons.runtime import wire
from daemons.runtime.client import BusClient
from daemons.runtime.config import BusSection
from daemons.runtime.envelope import Event
from daemons.runtime.transport import UnixTransport

SMALL = 64 << 10


def run(coro_fn: Callable[[Path], Awaitable[None]], tmp_path: Path) -> None:
    asyncio.run(asyncio.wait_for(coro_fn(tmp_path / "bus.sock"), 30))


async def start_broker(path: Path, buffer_limit: int = 8 << 20) -> Broker:
    broker = Broker(max_frame=1 << 20, buffer_limit=buffer_limit, group="algo")
    await broker.serve(bind_socket(path, "algo"))
    return broker


async def client(path: Path, source: str, **bus: Any) -> BusClient:
    c = BusClient.for_config(BusSection(socket=path, **bus), source)
    await c.start()
    assert c.connected
    return c


async def stalled_subscriber(path: Path, pattern: bytes) -> socket.socket:
    """A subscriber with a tiny receive buffer that reads nothing until the test says so."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await asyncio.get_running_loop().sock_connect(sock, str(path))
    sock.sendall(wire.encode(wire.SUBSCRIBE, pattern))
    return sock


async def read_until_quiet(sock: socket.socket, quiet: float) -> list[wire.Frame]:
    """Every frame a stalled subscriber's socket holds, read until nothing came for ``quiet`` seconds."""
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    reader, frames = wire.FrameReader(1 << 20), list[wire.Frame]()
    while True:
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), quiet)
        except TimeoutError:
            return frames
        frames += reader.feed(data)


async def until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def test_exact_and_prefix_subscriptions_with_envelope_and_trace(tmp_path: Path) -> None:
    async def go(path: Path) -> None:
        broker = await start_broker(path)
        pub = await client(path, "fno")
        exact: list[Event] = []
        prefix: list[Event] = []
        everything: list[Event] = []
        sub = await client(path, "risk")
        sub.subscribe("strategy.signal", exact.append)
        sub.subscribe("execution.*", prefix.append)
        sub.subscribe("*", everything.append)
        await asyncio.sleep(0.05)
        signal = pub.publish("strategy.signal", {"symbol": "NIFTY24DECFUT", "side": "BUY"})
        pub.publish("execution.order", {"order_id": "A1"}, trace=signal.trace)
        pub.publish("execution.fill", {"order_id": "A1"}, trace=signal.trace)
        pub.publish("risk.blocked", {"reason": "x"})
        await until(lambda: len(everything) == 4)
        assert [e.type for e in exact] == ["strategy.signal"]
        assert [e.type for e in prefix] == ["execution.order", "execution.fill"]
        got = exact[0]
        assert (got.id, got.source, got.seq, got.payload) == (signal.id, "fno", 1, {"symbol": "NIFTY24DECFUT", "side": "BUY"})
        assert got.trace == got.id  # a root event traces itself ...
        assert {e.trace for e in prefix} == {signal.id}  # ... and what it caused carries its id
        assert got.ts == signal.ts and abs(got.ts - __import__("time").time_ns()) < 5e9
        assert len({e.id for e in everything}) == 4
        await pub.close()
        await sub.close()
        await broker.close()

    run(go, tmp_path)


def test_sequence_gaps_are_detected_per_source_and_topic(tmp_path: Path) -> None:
    async def go(path: Path) -> None:
        broker = await start_broker(path)
        pub, sub = await client(path, "fno"), await client(path, "journal")
        got: list[Event] = []
        sub.subscribe("strategy.signal", got.append)
        await asyncio.sleep(0.05)
        pub.publish("execution.order", {})  # another topic of the same source: not a gap
        pub.publish("strategy.signal", {"n": 1})
        pub.events._seq["strategy.signal"] += 3  # three signals lost on the way
        pub.publish("strategy.signal", {"n": 5})
        await until(lambda: len(got) == 2)
        assert [e.seq for e in got] == [1, 5]
        assert sub.gaps == 3
        await pub.close()
        await sub.close()
        await broker.close()

    run(go, tmp_path)


def test_client_reconnects_resubscribes_and_flushes_its_outbox(tmp_path: Path) -> None:
    async def go(path: Path) -> None:
        broker = await start_broker(path)
        # The publisher reaches the broker through a link we control, so it reconnects only
        # after the subscriber has resubscribed (pub/sub keeps nothing for absent subscribers).
        link = path.with_name("pub.sock")
        link.symlink_to(path)
        fast = {"reconnect_min_sec": 0.01, "reconnect_max_sec": 0.05}
        pub = await client(link, "fno", **fast)
        sub = await client(path, "risk", **fast)
        got: list[Event] = []
        sub.subscribe("strategy.*", got.append)
        await asyncio.sleep(0.05)
        await broker.close()
        path.unlink()
        link.unlink()
        await until(lambda: not pub.connected and not sub.connected)
        pub.publish("strategy.signal", {"while": "down"})  # held in the outbox
        broker = await start_broker(path)
        await until(lambda: sub.connected and broker.subscriptions == 1)
        assert not pub.connected and got == []
        link.symlink_to(path)
        await until(lambda: len(got) == 1)
        assert got[0].payload == {"while": "down"}
        assert pub.transport.reconnects == 1 and sub.transport.reconnects == 1
        await pub.close()
        await sub.close()
        await broker.close()

    run(go, tmp_path)


def test_slow_subscriber_is_disconnected_and_nobody_else_stalls(tmp_path: Path) -> None:
    async def go(path: Path) -> None:
        broker = await start_broker(path, buffer_limit=SMALL)
        routed: dict[str, int] = {}
        disconnect = broker.slow_consumer

        def note_then_disconnect(peer: Any, incoming: int) -> None:
            routed["before_disconnect"] = broker.stats.published[b"execution.fill"]
            disconnect(peer, incoming)

        broker.slow_consumer = note_then_disconnect  # type: ignore[method-assign]
        stuck = await stalled_subscriber(path, b"execution.*")
        pub, fast = await client(path, "execution"), await client(path, "journal")
        got: list[Event] = []
        fast.subscribe("execution.*", got.append)
        await asyncio.sleep(0.05)
        for i in range(5000):
            pub.publish("execution.fill", {"i": i, "pad": "x" * 150})
            if i % 100 == 0:
                await asyncio.sleep(0)
        await until(lambda: len(got) == 5000, 10)
        assert broker.stats.disconnects["slow_consumer"] == 1
        assert pub.transport.dropped == 0 and fast.gaps == 0
        # Everything routed to the stuck subscriber before its disconnect either still sits in its
        # socket or is counted as dropped, including what was in the broker's write buffer.
        reader, received = wire.FrameReader(1 << 20), 0
        stuck.setblocking(True)
        while data := stuck.recv(1 << 16):
            received += sum(f.kind == wire.PUBLISH for f in reader.feed(data))
        dropped = broker.stats.dropped["slow_consumer"]
        assert received + dropped == pytest.approx(routed["before_disconnect"], abs=5)
        stuck.close()
        await pub.close()
        await fast.close()
        await broker.close()

    run(go, tmp_path)


def test_slow_marketdata_subscriber_gets_the_latest_tick_per_instrument(tmp_path: Path) -> None:
    async def go(path: Path) -> None:
        broker = await start_broker(path, buffer_limit=SMALL)
        slow = await stalled_subscriber(path, b"marketdata.*")
        pub = await client(path, "marketdata")
        await asyncio.sleep(0.05)
        tokens = [str(256265 + t) for t in range(10)]
        for i in range(2000):
            for tok in tokens:
                pub.publish("marketdata.tick", {"token": tok, "i": i, "pad": "x" * 120}, key=tok)
            await asyncio.sleep(0)
        await asyncio.sleep(0.1)
        assert broker.stats.dropped["conflated"] > 0
        assert broker.stats.disconnects["slow_consumer"] == 0  # market data never disconnects
        # The slow reader finally drains: the last thing it sees for every instrument is the newest tick.
        latest = {f.key.decode(): Event.decode(f.body).payload["i"] for f in await read_until_quiet(slow, 1.0)}
        assert latest == {tok: 1999 for tok in tokens}
        slow.close()
        await pub.close()
        await broker.close()

    run(go, tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a peer as another user")
def test_peers_outside_the_fleet_group_are_refused(tmp_path: Path) -> None:
    async def go(_: Path) -> None:
        path = Path(tempfile.mkdtemp(prefix="algo-peercred-")) / "bus.sock"
        path.parent.chmod(0o711)  # pytest's tmp_path is private to root
        broker = await start_broker(path)
        path.chmod(0o666)  # file permissions aside: SO_PEERCRED must still refuse
        probe = (
            "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]);"
            "d=b''\nwhile (c:=s.recv(4096)): d+=c\nsys.stdout.write(repr(d))"
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", probe, str(path), stdout=subprocess.PIPE, user=65534, group=65534
        )
        out, _err = await proc.communicate()
        assert b"forbidden" in out
        assert broker.stats.rejected_peers == 1 and not broker.peers
        await broker.close()
        shutil.rmtree(path.parent)

    run(go, tmp_path)


def test_a_refused_client_backs_off_instead_of_hammering_the_broker(tmp_path: Path) -> None:
    async def go(path: Path) -> None:
        broker = await start_broker(path)
        broker.policy.allows = lambda uid, gid: False  # type: ignore[method-assign]
        c = BusClient.for_config(BusSection(socket=path, reconnect_min_sec=0.02, reconnect_max_sec=0.5), "outsider")
        await c.start()
        await asyncio.sleep(1.5)
        # 20, 40, 80 ... 500 ms between attempts: about 7 in 1.5 s, where no backoff would make ~75.
        assert 4 <= broker.stats.rejected_peers <= 9
        await c.close()
        await broker.close()

    run(go, tmp_path)


class _Socket:
    """An asyncio transport's two calls the client makes, with a write buffer the test sets."""

    def __init__(self) -> None:
        self.buffered = 0
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered


def test_a_send_is_not_dropped_on_a_stale_view_of_the_socket_buffer() -> None:
    """The backlog seen at the last flush has drained since: a burst that fits now is queued, not dropped."""

    async def go() -> None:
        transport = UnixTransport("/nonexistent", b"", max_frame=1 << 20, buffer_bytes=1000, reconnect_min=0.1,
                                  reconnect_max=1.0, resubscribe=list)
        transport._loop = asyncio.get_running_loop()
        sock = _Socket()
        transport.connection_made(sock)  # type: ignore[arg-type]
        sock.buffered = 900  # the broker is behind when we flush...
        assert transport.send(b"x" * 50)
        await asyncio.sleep(0)
        sock.buffered = 0  # ...and has taken it all by the next burst
        assert transport.send(b"y" * 200)
        assert transport.dropped == 0
        sock.buffered = 900  # still behind: now it is a real overflow
        await asyncio.sleep(0)
        assert not transport.send(b"z" * 200)
        assert transport.dropped == 1

    asyncio.run(go())


def test_a_broker_restart_loses_nothing_a_client_was_publishing(tmp_path: Path) -> None:
    """Events published right up to and through a graceful broker stop all reach the subscriber once the
    next broker is up: the stopping broker routes what was already written, the clients hold the rest."""

    async def go(path: Path) -> None:
        broker = await start_broker(path)
        link = path.with_name("pub.sock")  # the publisher reconnects only after the subscriber has resubscribed
        link.symlink_to(path)
        fast = {"reconnect_min_sec": 0.01, "reconnect_max_sec": 0.05}
        pub = await client(link, "execution", **fast)
        sub = await client(path, "journal", **fast)
        got: list[int] = []
        sub.subscribe("execution.*", lambda e: got.append(e.payload["n"]))
        await asyncio.sleep(0.05)
        sent = 0
        stop = asyncio.Event()

        async def publishing() -> None:
            nonlocal sent
            while not stop.is_set():
                for _ in range(20):
                    pub.publish("execution.fill", {"n": sent})
                    sent += 1
                await asyncio.sleep(0.001)

        publisher = asyncio.create_task(publishing())
        await until(lambda: len(got) > 200)
        await broker.close()  # mid-stream
        path.unlink()
        link.unlink()
        stop.set()
        await publisher
        broker = await start_broker(path)
        await until(lambda: sub.connected and broker.subscriptions == 1)
        link.symlink_to(path)
        await until(lambda: len(got) >= sent)
        assert got == list(range(sent)) and pub.transport.dropped == 0
        await pub.close()
        await sub.close()
        await broker.close()

    run(go, tmp_path)


def test_a_stopping_broker_routes_what_a_publisher_had_already_written(tmp_path: Path) -> None:
    """Frames in the broker's socket, unread when it is told to stop, still reach their subscriber."""
    from daemons.runtime.envelope import EventFactory

    async def go(path: Path) -> None:
        broker = await start_broker(path)
        sub = await client(path, "journal")
        got: list[int] = []
        sub.subscribe("execution.*", lambda e: got.append(e.payload["n"]))
        pub = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await asyncio.get_running_loop().sock_connect(pub, str(path))
        pub.sendall(wire.encode(wire.HELLO, b"execution"))
        await until(lambda: broker.subscriptions == 1 and len(broker.peers) == 2)
        stamp = EventFactory("execution").stamp
        frames = [wire.encode(wire.PUBLISH, b"execution.fill", stamp("execution.fill", {"n": n})[1]) for n in range(50)]
        pub.sendall(b"".join(frames))  # in the broker's socket; its loop has not read them yet
        await broker.close()
        await until(lambda: len(got) == 50)
        assert got == list(range(50))
        pub.close()
        await sub.close()

    run(go, tmp_path)


def test_a_subscriber_that_comes_back_gets_the_order_path_events_it_missed(tmp_path: Path) -> None:
    """The journal crashes and returns under the same name: the fills published meanwhile come first, in
    order; ticks and heartbeats of that time do not (they are about now); another name gets nothing."""

    async def go(path: Path) -> None:
        broker = await start_broker(path)
        pub = await client(path, "execution")
        journal = await client(path, "journal")
        journal.subscribe("*", lambda e: None)
        await until(lambda: broker.subscriptions == 1)
        await journal.close()  # gone (a kill -9 looks the same to the broker)
        await until(lambda: len(broker.peers) == 1)
        for n in range(5):
            pub.publish("execution.fill", {"n": n})
        pub.publish("marketdata.tick", {"n": 99}, key="1")
        pub.publish("health.heartbeat", {"n": 98})
        await until(lambda: broker.stats.published[b"health.heartbeat"] == 1)
        other = await client(path, "eod")
        back = await client(path, "journal")
        seen: list[tuple[str, int]] = []
        back.subscribe("*", lambda e: seen.append((e.type, e.payload["n"])))
        other_seen: list[Event] = []
        other.subscribe("*", other_seen.append)
        await until(lambda: broker.subscriptions == 2)
        pub.publish("execution.fill", {"n": 5})
        await until(lambda: len(seen) == 6)
        assert seen == [("execution.fill", n) for n in range(6)]
        assert [e.payload["n"] for e in other_seen] == [5]
        for c in (pub, other, back):
            await c.close()
        await broker.close()

    run(go, tmp_path)


def test_what_an_acking_subscriber_had_not_acknowledged_when_killed_is_handed_to_it_again(tmp_path: Path) -> None:
    """The journal is killed with fills read from its socket and not yet written: it had acknowledged
    the first six only, so the broker hands the other four to the next journal first, then what came
    while it was away. A peer that acknowledges more than it was sent is dropped."""
    async def go(path: Path) -> None:
        broker = await start_broker(path)
        pub = await client(path, "execution")
        killed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await asyncio.get_running_loop().sock_connect(killed, str(path))
        killed.sendall(wire.encode(wire.HELLO, b"journal", b'{"pid": 1, "acks": true}') + wire.subscribe("execution.*"))
        await until(lambda: broker.subscriptions == 1)
        for n in range(6):
            pub.publish("execution.fill", {"n": n})
        pub.publish("marketdata.tick", {"n": 99}, key="1")  # not counted: acks are for the order path
        await until(lambda: broker.stats.delivered >= 6)
        killed.sendall(wire.ack(6))
        for n in range(6, 10):
            pub.publish("execution.fill", {"n": n})
        await until(lambda: broker.stats.delivered >= 10)
        killed.close()  # as kill -9 does: what was in its socket is gone
        await until(lambda: len(broker.peers) == 1)
        pub.publish("execution.fill", {"n": 10})
        await until(lambda: broker.stats.published[b"execution.fill"] == 11)
        back = BusClient.for_config(BusSection(socket=path), "journal", acks=True)
        seen: list[int] = []
        back.subscribe("execution.*", lambda e: seen.append(e.payload["n"]))
        await back.start()
        await until(lambda: len(seen) == 5)
        assert seen == [6, 7, 8, 9, 10]
        back.acknowledge()
        liar = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await asyncio.get_running_loop().sock_connect(liar, str(path))
        liar.sendall(wire.encode(wire.HELLO, b"liar", b'{"acks": true}') + wire.ack(1))
        await until(lambda: broker.stats.protocol_errors["malformed"] == 1)
        liar.close()
        for c in (pub, back):
            await c.close()
        await broker.close()

    run(go, tmp_path)


def test_events_are_kept_for_a_peer_that_left_within_bounds_of_time_and_size() -> None:
    from daemons.bus.sessions import KEEP_BYTES, KEEP_SEC, Sessions

    sessions = Sessions()
    sessions.leave("journal", {"execution.*"}, now=100.0, unacked=[])
    sessions.leave("?", {"*"}, now=100.0, unacked=[])  # no name, nothing to hand back to
    frame = b"x" * 1000
    assert sessions.keep(b"execution.fill", frame, 1, now=101.0) == 0
    assert sessions.keep(b"risk.approved", frame, 1, now=101.0) == 0  # not subscribed
    lost = sum(sessions.keep(b"execution.fill", frame, 1, now=102.0) for _ in range(KEEP_BYTES // 1000 + 10))
    assert lost == 11  # over KEEP_BYTES: counted, not kept
    session = sessions.resume("journal", now=103.0)
    assert session is not None and session.frames == KEEP_BYTES // 1000 and session.lost == 11
    assert sessions.resume("journal", now=103.0) is None  # handed over once
    sessions.leave("risk", {"strategy.*"}, now=200.0, unacked=[])
    assert sessions.keep(b"strategy.signal", frame, 1, now=200.0 + KEEP_SEC + 1) == 0  # expired: dropped its nothing
    assert sessions.resume("risk", now=200.0 + KEEP_SEC + 2) is None
