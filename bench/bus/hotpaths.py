#!/usr/bin/env python3
"""Per-message CPU cost of the bus's hot paths, in one process, without sockets.

    .venv/bin/python bench/bus/hotpaths.py

Complements run.py (which measures whole processes): this isolates the Python work of each stage
with the same message as run.py.
Numbers are the best of 5 passes over 100k messages; expect +-15% between runs. The "current"
rows call into daemons/ internals (Peer, FrameReader, UnixTransport), so they follow its changes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
from run import TOPIC, tick_pool

from daemons.bus.broker import Broker, Peer
from daemons.runtime import wire
from daemons.runtime.client import BusClient
from daemons.runtime.envelope import Event, EventFactory, decode_body
from daemons.runtime.rehearsal import NullTransport
from daemons.runtime.transport import UnixTransport

N = 100_000
BATCH = 64


def best(fn: Callable[[], Any], n: int = N, reps: int = 5) -> float:
    """ns per message, best of `reps`."""
    b = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        b = min(b, time.perf_counter() - t0)
    return b / n * 1e9


class FakeTx:
    """Stands in for a uvloop transport: swallows writes, never has a backlog."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, b: bytes) -> None:
        self.bytes += len(b)

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, **_: int) -> None:
        pass


class ListTransport(NullTransport):
    """Keeps what is sent (a NullTransport otherwise)."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[bytes] = []

    def send(self, frame: bytes, now: bool = False) -> bool:
        self.frames.append(frame)
        return True


def each(fn: Callable[[Any], Any], items: list[Any]) -> Callable[[], None]:
    """Call fn on every item, keeping no results (a growing list would bill allocation to fn)."""

    def go() -> None:
        for x in items:
            fn(x)
    return go


def row(label: str, ns: float) -> None:
    print(f"  {label:<62} {ns:7.0f} ns/msg")


def main() -> None:
    pool = tick_pool()
    keys = [str(p["token"]) for p in pool]

    # ---- publisher --------------------------------------------------------------------------
    print("publisher")
    loop = asyncio.new_event_loop()
    ut = UnixTransport("/unused", b"", max_frame=1 << 20, buffer_bytes=1 << 30, reconnect_min=0.1,
                       reconnect_max=1, resubscribe=list)
    ut._tx = FakeTx()  # type: ignore[assignment]
    ut._loop = loop
    ut.connected = True
    pub = BusClient(ut, "bench-pub")

    def publish_current() -> None:
        publish = pub.publish
        for i in range(N):
            publish(TOPIC, pool[i & 255], key=keys[i & 255])
            if i % BATCH == BATCH - 1:
                ut.flush()

    row("BusClient.publish + UnixTransport.send/_flush ", best(publish_current))

    event = {"id": "bench-pub-0a1b2c3d-1", "ts": time.time_ns(), "type": TOPIC, "source": "bench-pub", "seq": 1,
             "trace": "bench-pub-0a1b2c3d-1", "payload": pool[0]}
    factory = EventFactory("bench-pub")
    def stamp(i: int) -> None:
        factory.stamp(TOPIC, pool[i & 255], None, keys[i & 255])

    row("  EventFactory.stamp: id, seq, ts, Event, JSON body", best(each(stamp, list(range(N)))))
    row("    orjson.dumps of one event dict alone", best(each(orjson.dumps, [event] * N)))
    _, body = factory.stamp(TOPIC, pool[0], None, keys[0])
    topic_b, key_b = TOPIC.encode(), keys[0].encode()
    row("  wire.encode: header and frame", best(each(lambda b: wire.encode(wire.PUBLISH, topic_b, b, key_b), [body] * N)))
    frame = wire.encode(wire.PUBLISH, topic_b, body, key_b)

    def send_flush() -> None:
        for i in range(N):
            ut.send(frame)
            if i % BATCH == BATCH - 1:
                ut.flush()

    row("  UnixTransport.send + _flush (one write per 64)", best(send_flush))

    lt = ListTransport()
    lc = BusClient(lt, "bench-pub")
    for i in range(N):
        lc.publish(TOPIC, pool[i & 255], key=keys[i & 255])
    frames = lt.frames
    chunks = [b"".join(frames[i : i + BATCH]) for i in range(0, len(frames), BATCH)]
    print(f"  (one frame: {len(frames[0])} B; {BATCH} frames per read below)")

    # ---- broker -----------------------------------------------------------------------------
    print("broker")

    def broker_current(nsubs: int, names: frozenset[bytes] | None = None) -> Callable[[], None]:
        b = Broker(max_frame=1 << 20, buffer_limit=1 << 30, group="root")
        src = Peer(b)
        src.tx = FakeTx()  # type: ignore[assignment]
        for _ in range(nsubs):
            p = Peer(b)
            p.tx = FakeTx()  # type: ignore[assignment]
            b.peers.add(p)
            b.subscribe(p, TOPIC, names)

        def go() -> None:
            for ch in chunks:
                src.data_received(ch)
        return go

    for k in (1, 3):
        row(f"1->{k} Peer.data_received: parse, check, route, flush ", best(broker_current(k)))
    row("1->3 the same, each subscriber filtered to 1 key of 256", best(broker_current(3, frozenset({keys[0].encode()}))))
    row("  wire.scan (header parse only)", best(each(lambda ch: wire.scan(ch, 1 << 20), chunks)))
    parsed = wire.FrameReader(1 << 20).feed(b"".join(chunks))

    # ---- subscriber -------------------------------------------------------------------------
    print("subscriber")
    got = 0

    def handler(ev: Event) -> None:
        nonlocal got
        got += 1

    sub = BusClient(ListTransport(), "bench-sub")
    sub.subscribe(TOPIC, handler)
    st = UnixTransport("/unused", b"", max_frame=1 << 20, buffer_bytes=1 << 20, reconnect_min=0.1,
                       reconnect_max=1, resubscribe=list)
    st.on_batch = sub._on_batch
    row("UnixTransport.data_received -> _on_batch -> handler", best(each(st.data_received, chunks)))
    row("  wire.scan (header parse only)", best(each(lambda ch: wire.scan(ch, 1 << 20), chunks)))
    scanned = [(ch, wire.scan(ch, 1 << 20)[0]) for ch in chunks]
    row("  BusClient._deliver: decode, check, seq, handler", best(each(lambda cs: sub._deliver(cs[0], cs[1], 1), scanned)))
    views = [memoryview(f.raw)[f.offset :] for f in parsed]
    row("    msgspec decode + check into Event (decode_body)", best(each(decode_body, views)))
    row("    orjson.loads(body) alone, for comparison", best(each(orjson.loads, views)))
    row("  Event.decode with the key from the header", best(each(lambda f: Event.decode(f.body, f.key.decode()), parsed)))

    loop.close()


if __name__ == "__main__":
    main()
