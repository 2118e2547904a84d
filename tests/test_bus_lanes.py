"""The order path never queues behind market data: in the broker (two lanes per subscriber) and in the
client (order-path frames of a read first, ticks a slice per loop turn, latest_only conflation). Market
data is the whole market-data lane: ticks, and the bars and features derived from them."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from daemons.bridge.streams import MARKETDATA, family
from daemons.bus import broker as broker_module
from daemons.bus.broker import Peer
from daemons.bus.sessions import Sessions
from daemons.journal_format.layout import kind_of
from daemons.risk.main import RiskDaemon
from daemons.runtime import wire
from daemons.runtime.client import MD_QUEUE_FRAMES, MD_SLICE, BusClient
from daemons.runtime.config import BusSection, FleetConfig
from daemons.runtime.envelope import Event, EventFactory
from daemons.runtime.metrics import DaemonMetrics
from daemons.runtime.transport import WRITE_AT_BYTES, UnixTransport

from .test_bus import client, read_until_quiet, run, stalled_subscriber, start_broker
from .test_strategy_isolation import Failing, engine_with, tick_event
from .test_tick_filters import signal as filter_signal

TICKS = 10_000
TOKENS = [str(256265 + t) for t in range(50)]


# (market data, the order-path event that must not wait behind it)
LANES = [("marketdata.tick", "risk.approved"), ("features.bar", "execution.fill"), ("features.snapshot", "risk.approved")]


def tick_frames(factory: EventFactory, count: int, start: int = 0, topic: str = "marketdata.tick") -> bytes:
    frames = []
    for i in range(start, start + count):
        token = TOKENS[i % len(TOKENS)]
        _, body = factory.stamp(topic, {"token": token, "i": i, "pad": "x" * 120}, key=token)
        frames.append(wire.encode(wire.PUBLISH, topic.encode(), body, token.encode()))
    return b"".join(frames)


def feed(sub: BusClient, data: bytes) -> None:
    """As if the broker had sent ``data`` in one read."""
    transport = sub.transport
    assert isinstance(transport, UnixTransport)
    transport.data_received(data)


def approval_frame(factory: EventFactory, topic: str = "risk.approved") -> bytes:
    _, body = factory.stamp(topic, {"order": "A1"})
    return wire.encode(wire.PUBLISH, topic.encode(), body)


@pytest.mark.parametrize(("md", "order"), LANES)
def test_an_approval_published_after_a_deep_tick_backlog_overtakes_it_in_the_broker(tmp_path: Path, md: str,
                                                                                    order: str) -> None:
    async def go(path: Path) -> None:
        broker = await start_broker(path)
        slow = await stalled_subscriber(path, b"*")
        pub = await client(path, "marketdata")
        await asyncio.sleep(0.05)
        for i in range(TICKS):
            token = TOKENS[i % len(TOKENS)]
            pub.publish(md, {"token": token, "i": i, "pad": "x" * 120}, key=token)
            if i % 500 == 0:
                await asyncio.sleep(0)
        pub.publish(order, {"order": "A1"})
        await asyncio.sleep(0.2)
        # The subscriber reads only now: what the broker had queued for it comes out in this order.
        seen: list[bytes] = []
        latest: dict[str, int] = {}
        published: list[int] = []
        for f in await read_until_quiet(slow, 0.5):
            seen.append(f.topic)
            if f.topic == md.encode():
                published.append(Event.decode(f.body).payload["i"])
                latest[f.key.decode()] = max(latest.get(f.key.decode(), -1), published[-1])
        ticks_first = seen.index(order.encode())
        ticks = seen.count(md.encode())
        # Only the ticks already in the kernel's socket buffer (and the unsent rest of one write) are ahead of
        # it; on a single FIFO it came after thousands.
        assert ticks_first < 2000, ticks_first
        assert ticks_first < ticks
        # Market data held back meanwhile comes in order up to the broker's hold limit, then only the newest per
        # instrument; every skip is counted.
        in_order = published[: -len(TOKENS)]
        assert in_order == sorted(in_order) and len(in_order) > 2000
        assert latest == {tok: TICKS - len(TOKENS) + n for n, tok in enumerate(TOKENS)}
        assert ticks + broker.stats.dropped["conflated"] == TICKS
        assert broker.stats.disconnects["slow_consumer"] == 0
        slow.close()
        await pub.close()
        await broker.close()

    run(go, tmp_path)


@pytest.mark.parametrize(("md", "order"), LANES)
def test_a_client_dispatches_the_order_path_of_a_read_before_its_ticks(tmp_path: Path, md: str, order: str) -> None:
    async def go(path: Path) -> None:
        sub = BusClient.for_config(BusSection(socket=path), "execution")  # fed by hand, never connected
        seen: list[str] = []
        sub.subscribe(md, lambda e: seen.append(f"tick {e.payload['i']}"))
        sub.subscribe(order, lambda e: seen.append("approved"))
        factory = EventFactory("marketdata")
        feed(sub, tick_frames(factory, 1000, topic=md) + approval_frame(EventFactory("risk"), order))
        assert seen[0] == "approved"  # handled as the read arrived, before any of the ticks read with it
        assert len(seen) == 1
        feed(sub, approval_frame(EventFactory("risk"), order))
        assert seen == ["approved", "approved"]  # an approval read later does not wait for those ticks either
        while len(seen) < 1002:
            before = len(seen)
            await asyncio.sleep(0)
            assert len(seen) - before <= MD_SLICE  # ticks go a slice per loop turn
        assert seen[2:] == [f"tick {i}" for i in range(1000)]  # every tick, in order
        assert sub.gaps == 0 and sub.conflated == 0

    run(go, tmp_path)


def test_a_daemon_far_behind_keeps_reading_and_gets_the_newest_tick_per_key_beyond_its_queue(tmp_path: Path) -> None:
    async def go(path: Path) -> None:
        sub = BusClient.for_config(BusSection(socket=path), "fno")
        ticks: list[int] = []
        approvals: list[int] = []
        sub.subscribe("marketdata.tick", lambda e: ticks.append(e.payload["i"]))
        sub.subscribe("risk.approved", lambda e: approvals.append(len(ticks)))
        factory, total = EventFactory("marketdata"), 5 * MD_QUEUE_FRAMES
        feed(sub, tick_frames(factory, total))
        feed(sub, approval_frame(EventFactory("risk")))
        assert approvals == [0]  # still read and handled at once
        for _ in range(1000):
            await asyncio.sleep(0)
        # Every tick up to the queue's bound, in order; beyond it only the newest of each instrument,
        # instruments in the order they were first held (publish order, thinned).
        newest: dict[str, int] = {}
        for i in range(MD_QUEUE_FRAMES, total):
            newest[TOKENS[i % len(TOKENS)]] = i
        assert ticks[:MD_QUEUE_FRAMES] == list(range(MD_QUEUE_FRAMES))
        assert ticks[MD_QUEUE_FRAMES:] == list(newest.values())
        assert sub.conflated == total - MD_QUEUE_FRAMES - len(TOKENS)
        # Skipped by conflation is not lost: the next tick read in order counts no gap.
        feed(sub, tick_frames(factory, 1, total))
        for _ in range(10):
            await asyncio.sleep(0)
        assert ticks[-1] == total
        assert sub.gaps == 0

    run(go, tmp_path)


def test_a_latest_only_subscriber_gets_the_newest_tick_of_each_symbol(tmp_path: Path) -> None:
    async def go(path: Path) -> None:
        sub = BusClient.for_config(BusSection(socket=path), "risk")
        marks: dict[str, int] = {}
        every: list[int] = []
        sub.subscribe("marketdata.tick", lambda e: marks.__setitem__(e.key, e.payload["i"]), latest_only=True)
        sub.subscribe("marketdata.*", lambda e: every.append(e.payload["i"]))  # another handler still sees all
        factory = EventFactory("marketdata")
        feed(sub, tick_frames(factory, 600))
        feed(sub, tick_frames(factory, 400, start=600))
        for _ in range(200):
            await asyncio.sleep(0)
        assert marks == {tok: 1000 - len(TOKENS) + n for n, tok in enumerate(TOKENS)}
        assert sub.conflated == 1000 - len(TOKENS)
        assert every == list(range(1000))
        assert sub.gaps == 0  # conflation by design is not a gap

    run(go, tmp_path)


def test_latest_only_handlers_are_current_when_an_order_path_event_overtakes_ticks(tmp_path: Path) -> None:
    async def go(path: Path) -> None:
        sub = BusClient.for_config(BusSection(socket=path), "risk")
        marks: dict[str, int] = {}
        at_signal: list[dict[str, int]] = []
        sub.subscribe("marketdata.tick", lambda e: marks.__setitem__(e.key, e.payload["i"]), latest_only=True)
        sub.subscribe("risk.approved", lambda e: at_signal.append(dict(marks)))
        feed(sub, tick_frames(EventFactory("marketdata"), 500) + approval_frame(EventFactory("x")))
        # Risk checks a signal against the newest mark of the read it came in, not one a tick behind.
        assert at_signal == [{tok: 500 - len(TOKENS) + n for n, tok in enumerate(TOKENS)}]

    run(go, tmp_path)


def test_latest_only_is_for_market_data(tmp_path: Path) -> None:
    sub = BusClient.for_config(BusSection(socket=tmp_path / "bus.sock"), "risk")
    try:
        sub.subscribe("risk.approved", lambda e: None, latest_only=True)
    except ValueError as exc:
        assert "market data" in str(exc)
    else:
        raise AssertionError("latest_only on an order-path topic was accepted")


def test_ticks_still_held_at_close_reach_no_handler(tmp_path: Path) -> None:
    async def go(path: Path) -> None:
        sub = BusClient.for_config(BusSection(socket=path), "fno")
        ticks: list[int] = []
        sub.subscribe("marketdata.tick", lambda e: ticks.append(e.payload["i"]))
        sub.subscribe("marketdata.tick", lambda e: ticks.append(e.payload["i"]), latest_only=True)
        feed(sub, tick_frames(EventFactory("marketdata"), 5 * MD_QUEUE_FRAMES))
        await sub.close()  # the daemon is stopping: its state is being saved
        for _ in range(100):
            await asyncio.sleep(0)
        assert ticks == []

    run(go, tmp_path)


def readable(peer: socket.socket) -> bytes:
    """What the client has written to the socket so far (nothing: b"")."""
    try:
        return peer.recv(1 << 20, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return b""


@asynccontextmanager
async def bare_peer(path: Path) -> AsyncIterator[tuple[BusClient, socket.socket]]:
    """A client named risk connected to a bare socket (no broker), so what it writes, and when, is read raw;
    both ends closed after, whatever the test found."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen()
        pub = await client(path, "risk")
        peer, _ = server.accept()
        try:
            await asyncio.sleep(0.05)
            assert b"risk" in readable(peer)  # its greeting
            yield pub, peer
        finally:
            await pub.close()
            peer.close()


def test_an_order_path_event_is_written_at_publish_and_market_data_at_the_end_of_the_turn(tmp_path: Path) -> None:
    """The rest of a publisher's turn (its log line, the rest of a batch of ticks) must not delay an
    approval; a few ticks leave together at the end of the turn."""
    async def go(path: Path) -> None:
        async with bare_peer(path) as (pub, peer):
            pub.publish("marketdata.tick", {"token": "1"}, key="1")
            pub.publish("risk.approved", {"order": "A1"})
            written = readable(peer)  # no await in between: still the publisher's turn
            assert b"risk.approved" in written and written.index(b"marketdata.tick") < written.index(b"risk.approved")
            pub.publish("marketdata.tick", {"token": "2"}, key="2")
            assert readable(peer) == b""
            await asyncio.sleep(0)
            assert b"marketdata.tick" in readable(peer)

    run(go, tmp_path)


def test_a_burst_of_ticks_leaves_in_pieces_while_the_rest_is_still_being_published(tmp_path: Path) -> None:
    """A step of thousands of ticks published in one turn must not hold its first ticks until the last is
    stamped: every WRITE_AT_BYTES queued are written at once, and only the remainder waits for the turn's end."""
    async def go(path: Path) -> None:
        async with bare_peer(path) as (pub, peer):
            tick = {"token": "0", "symbol": "NSE:SYN", "last_price": 100.0, "pad": "x" * 200}
            n = 0
            while pub.transport.queued_bytes < WRITE_AT_BYTES // 2:
                pub.publish("marketdata.tick", tick | {"token": str(n)}, key=str(n))
                n += 1
            assert readable(peer) == b""  # under the mark: nothing written yet
            while not (early := readable(peer)):
                pub.publish("marketdata.tick", tick | {"token": str(n)}, key=str(n))
                n += 1
                assert n < 1000, "the ticks stayed queued past WRITE_AT_BYTES"
            assert WRITE_AT_BYTES <= len(early) < WRITE_AT_BYTES + 1024  # one write of what was queued, the first tick first
            assert early.index(b'"token":"0"') < early.index(f'"token":"{n - 1}"'.encode())
            pub.publish("marketdata.tick", tick | {"token": "last"}, key="last")
            assert readable(peer) == b""  # the remainder waits for the turn's end
            await asyncio.sleep(0)
            assert b'"token":"last"' in readable(peer)

    run(go, tmp_path)


def test_every_part_of_the_fleet_agrees_on_what_is_market_data() -> None:
    """One definition (envelope.is_market_data): the broker's lanes and key filters, the sessions it keeps
    for a peer that comes back, the journal's market file (shed first) and the bridge's trimmed stream."""
    sessions = Sessions()
    sessions.leave("journal", {"*"}, 0.0, [])
    for topic in ("marketdata.tick", "marketdata.ohlc", "features.bar", "features.snapshot", "features.sync"):
        assert wire.key_filter(topic.encode(), b'["INFY"]') == frozenset({b"INFY"})
        sessions.keep(topic.encode(), b"frame", 1, 0.0)
        assert sessions.by_name["journal"].frames == 0  # about now: not kept for a peer that comes back
        assert kind_of(topic) == "market"
        assert family(topic) == MARKETDATA
    assert family("features.*") == MARKETDATA
    for topic in ("risk.approved", "execution.fill", "control.pause", "strategy.signal"):
        with pytest.raises(wire.ProtocolError):
            wire.key_filter(topic.encode(), b'["INFY"]')
        assert kind_of(topic) == "orders"
        assert family(topic) == topic.split(".")[0]
        sessions.keep(topic.encode(), b"frame", 1, 0.0)
    assert sessions.by_name["journal"].frames == 4


def test_only_the_first_order_path_event_of_a_turn_is_written_at_once(tmp_path: Path) -> None:
    """A flood of order-path events in one turn (a flatten's orders) costs one write more, not one each:
    the first goes at once, the rest leave together when the turn ends, in publish order."""
    async def go(path: Path) -> None:
        async with bare_peer(path) as (pub, peer):
            for turn in range(2):
                for n in range(3):
                    pub.publish("risk.approved", {"order": f"T{turn}-{n}"})
                written = readable(peer)  # still the publisher's turn
                assert f"T{turn}-0".encode() in written
                assert f"T{turn}-1".encode() not in written and f"T{turn}-2".encode() not in written
                await asyncio.sleep(0)
                rest = readable(peer)
                assert rest.index(f"T{turn}-1".encode()) < rest.index(f"T{turn}-2".encode())
                assert f"T{turn}-0".encode() not in rest

    run(go, tmp_path)


def test_the_broker_writes_an_event_to_the_daemons_that_asked_for_it_before_those_that_record_everything(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On two CPUs the first process woken takes the idle one: that must be execution acting on an approval,
    not the journal (or the gateway) recording it."""
    written: list[str] = []
    write = Peer.write

    def record(peer: Peer, data: bytes) -> int:
        written.append(peer.name)
        return write(peer, data)

    async def go(path: Path) -> None:
        broker = await start_broker(path)
        recorders = [await client(path, f"recorder{n}") for n in range(8)]
        for recorder in recorders:
            recorder.subscribe("*", lambda event: None)
        actor = await client(path, "execution")
        actor.subscribe("risk.approved", lambda event: None)
        prefix = await client(path, "risk")
        prefix.subscribe("risk.*", lambda event: None)
        pub = await client(path, "publisher")
        await asyncio.sleep(0.1)
        monkeypatch.setattr(Peer, "write", record)
        pub.publish("risk.approved", {"order": "A1"})
        await asyncio.sleep(0.1)
        assert sorted(written) == sorted(["execution", "risk", *(f"recorder{n}" for n in range(8))])
        assert set(written[:2]) == {"execution", "risk"}, written
        for c in (*recorders, actor, prefix, pub):
            await c.close()
        await broker.close()

    run(go, tmp_path)


def test_a_decisions_signals_leave_together_before_its_log_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A reversal's exit and entry (or a straddle's legs) are stamped back to back and written before the
    engine's turn goes on: the second waited for the first's log line and for the rest of the turn."""
    async def go(path: Path) -> None:
        async with bare_peer(path) as (pub, peer):
            engine = engine_with(tmp_path, monkeypatch)
            engine.strategies = {"both": Failing("both")}
            engine.strategies["both"].failing = False  # type: ignore[attr-defined]  # an entry and an exit a tick
            engine.counts.update(both=0)
            engine.bus = pub
            caplog.set_level(logging.INFO, "algo.engine")
            engine._on_tick(tick_event(1))
            written = wire.FrameReader(1 << 20).feed(readable(peer))  # no await: the engine's turn is not over
            stamps = [Event.decode(f.body).ts for f in written if f.topic == b"strategy.signal"]
            assert len(stamps) == 2, written
            lines = [r for r in caplog.records if r.name == "algo.engine" and "both" in str(getattr(r, "STRATEGY", ""))]
            assert len(lines) == 2 and max(stamps) <= lines[0].created * 1e9

    run(go, tmp_path)


def test_a_second_approval_of_one_read_does_not_wait_for_the_first_ones_log_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Risk's decision lines (and execution's answers) are logged once the turn's events are written: a
    journald line is ~50 µs the next approval of the same read waited for. The line keeps its decision's time,
    caller and fields."""
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))

    async def go(path: Path) -> None:
        async with bare_peer(path) as (pub, peer):
            risk = RiskDaemon(FleetConfig(), DaemonMetrics("risk"))
            risk.bus = pub
            caplog.set_level(logging.INFO, "algo.risk")
            risk._on_signal(filter_signal("TCS", 1))
            risk._on_signal(filter_signal("INFY", 2))
            approvals = [f for f in wire.FrameReader(1 << 20).feed(readable(peer)) if f.topic == b"risk.approved"]
            assert len(approvals) == 1 and not [r for r in caplog.records if r.name == "algo.risk"], "no line yet"
            await asyncio.sleep(0)
            approvals += [f for f in wire.FrameReader(1 << 20).feed(readable(peer)) if f.topic == b"risk.approved"]
            lines = [r for r in caplog.records if r.name == "algo.risk"]
            assert [r.getMessage() for r in lines] == ["approved BUY 1 TCS", "approved BUY 1 INFY"]
            assert [r.funcName for r in lines] == ["_on_signal"] * 2 and lines[1].SYMBOL == "INFY"  # type: ignore[attr-defined]
            assert lines[0].created * 1e9 < Event.decode(approvals[1].body).ts, "the line's time is its decision's"

    run(go, tmp_path)


def test_an_approval_that_reaches_the_broker_during_a_long_read_of_ticks_is_routed_before_the_rest_of_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst of the whole universe reaches the broker in reads of ~700 ticks, and routing one to the fleet's
    key-filtered subscribers took milliseconds: an approval read from risk's socket meanwhile must not wait for
    all of it. The broker routes ROUTE_SLICE frames of a read per loop turn and reads the other peers between."""
    monkeypatch.setattr(broker_module, "ROUTE_SLICE", 16)

    async def go(path: Path) -> None:
        broker = await start_broker(path)
        loop = asyncio.get_running_loop()
        sub, feed_, risk = (socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(3))
        for sock in (sub, feed_, risk):
            await loop.sock_connect(sock, str(path))
        sub.sendall(wire.encode(wire.SUBSCRIBE, b"*"))
        await asyncio.sleep(0.05)
        # Both written while the broker cannot run (this test holds its loop): its next turn finds both readable.
        feed_.sendall(tick_frames(EventFactory("marketdata"), 64))
        risk.sendall(approval_frame(EventFactory("risk")))
        await asyncio.sleep(0.2)
        topics = [f.topic for f in await read_until_quiet(sub, 0.3)]
        assert topics.count(b"marketdata.tick") == 64 and topics.count(b"risk.approved") == 1
        assert topics.index(b"risk.approved") == 16, topics.index(b"risk.approved")  # after the first slice only
        feed_.sendall(tick_frames(EventFactory("marketdata"), 40, start=64))  # the feed is read again afterwards
        await asyncio.sleep(0.2)
        assert [f.topic for f in await read_until_quiet(sub, 0.3)] == [b"marketdata.tick"] * 40
        for sock in (sub, feed_, risk):
            sock.close()
        await broker.close()

    run(go, tmp_path)


class Wire:
    """A peer's transport that keeps what is written to it and whether reading is paused."""

    def __init__(self) -> None:
        self.written = b""
        self.reading = True

    def write(self, data: bytes) -> None:
        self.written += data

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        pass


def test_frames_of_a_long_read_are_routed_in_order_even_when_their_peer_or_the_broker_goes_away_meanwhile(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A publisher whose long read is still being routed a slice per turn when its connection ends: every frame
    it sent still reaches the subscribers, in order, and so does what is left when the broker stops; reading
    resumes once a read is through."""
    monkeypatch.setattr(broker_module, "ROUTE_SLICE", 8)
    factory = EventFactory("execution")
    each = [approval_frame(factory, "execution.order") for _ in range(50)]
    frames, first_ten = b"".join(each), b"".join(each[:10])

    async def go() -> None:
        broker = broker_module.Broker(max_frame=1 << 20, buffer_limit=8 << 20, group="algo")
        sub, pub = Peer(broker), Peer(broker)
        sub_wire, pub_wire, other_wire = Wire(), Wire(), Wire()
        sub.tx, pub.tx = sub_wire, pub_wire  # type: ignore[assignment]
        broker.peers.update((sub, pub))
        broker.subscribe(sub, "*", None)
        pub.data_received(frames)
        assert not pub_wire.reading
        await asyncio.sleep(0)
        pub.connection_lost(None)
        got = wire.FrameReader(1 << 20).feed(sub_wire.written)
        assert [Event.decode(f.body).seq for f in got] == list(range(1, 51))
        pub.data_received(first_ten)  # 10 frames, from a peer that is gone: not routed
        assert len(wire.FrameReader(1 << 20).feed(sub_wire.written)) == 50
        other = Peer(broker)
        other.tx = other_wire  # type: ignore[assignment]
        broker.peers.add(other)
        other.data_received(first_ten)
        for _ in range(3):
            await asyncio.sleep(0)
        assert other_wire.reading and len(wire.FrameReader(1 << 20).feed(sub_wire.written)) == 60
        other.data_received(frames)  # a broker that stops mid-read routes the rest before it closes
        await broker.close(grace=0)
        got = [f for f in wire.FrameReader(1 << 20).feed(sub_wire.written) if f.kind == wire.PUBLISH]
        assert len(got) == 110 and [Event.decode(f.body).seq for f in got[60:]] == list(range(1, 51))

    asyncio.run(go())
