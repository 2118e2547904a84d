"""The broker: routes PUBLISH frames to subscribers by topic without decoding their bodies.

Two lanes per subscriber. The order path (every topic not of the market-data lane, ``envelope.is_market_data``) is written at
once, so it never queues behind market data inside the broker. Market data is written only while
the subscriber's socket has drained its last write; while it has not, the broker holds ticks in its
own per-peer buffer (in order, up to ``md_hold_bytes``; beyond that only the newest per (topic, key))
and writes them ``MD_WRITE_BYTES`` at a time as the socket drains. So the only ticks in front of an
approval are those already in the kernel's socket buffer (``PEER_SNDBUF``) and at most the unsent
rest of one write. Nor does an approval wait in another peer's socket while the broker routes a burst:
a read is routed ``ROUTE_SLICE`` frames per loop turn, the other peers read in between.

A market-data subscription may carry a key filter (see wire.py): such a subscriber is sent only the
ticks whose key names one of its instruments, so an engine trading ten symbols does not read, decode
and discard the other 8,990 of every step.

A slow subscriber never stalls anyone: an order-path frame that would take its write buffer past
``buffer_limit`` disconnects it, and its client reconnects and resubscribes (the resync). Every
drop is counted.
"""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import pwd
import socket
import struct
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import cast

import orjson

from ..runtime import wire
from ..runtime.envelope import MARKET_DATA_MARKS
from .sessions import KEEP_BYTES, Arrivals, Sessions

log = logging.getLogger("algo.bus")

_PEERCRED = struct.Struct("3i")
CLOSE_GRACE_SEC = 0.25  # how long a stopping broker still routes what peers sent before they heard

# The kernel's send buffer per subscriber socket: the most market data that can sit in front of an
# order-path frame once the broker starts holding ticks back (Linux doubles the value for its own
# bookkeeping). Smaller means less wait for an approval behind ticks and more wake-ups at full speed.
PEER_SNDBUF = 64 << 10
MD_WRITE_BYTES = 64 << 10  # held market data written per drain of the socket: what an approval may find ahead
# Frames routed from one read per loop turn. A burst of the whole universe comes in reads of up to 256 KiB
# (~600 ticks), and routing one to the fleet's subscribers takes ~1 ms of CPU (more on two CPUs busy with the
# burst): a signal or an approval that reached the broker meanwhile waited for all of it. Past this many
# frames, the rest of the read waits for the next turn (its peer's reading paused, so its frames stay in
# order) and the other peers are read first (bench/pipeline/README.md, round 13).
ROUTE_SLICE = 64


@dataclass
class BrokerStats:
    published: Counter[bytes] = field(default_factory=Counter)
    delivered: int = 0
    filtered: int = 0  # market-data deliveries a subscriber's key filter asked not to get
    dropped: Counter[str] = field(default_factory=Counter)
    protocol_errors: Counter[str] = field(default_factory=Counter)
    disconnects: Counter[str] = field(default_factory=Counter)
    rejected_peers: int = 0
    accepted_peers: int = 0


class PeerPolicy:
    """Who may connect: root, the broker's own user, and the fleet group's members (SO_PEERCRED)."""

    def __init__(self, group: str) -> None:
        try:
            gr = grp.getgrnam(group)
            self.gid: int | None = gr.gr_gid
            self.members = set(gr.gr_mem)
        except KeyError:
            log.warning("group %r does not exist; only root and uid %d may use the bus", group, os.geteuid())
            self.gid, self.members = None, set()
        self.uids = {0, os.geteuid()}

    def allows(self, uid: int, gid: int) -> bool:
        if uid in self.uids or (self.gid is not None and gid == self.gid):
            return True
        try:
            return pwd.getpwuid(uid).pw_name in self.members
        except KeyError:
            return False


class Peer(asyncio.Protocol):
    """One client connection, both publisher and subscriber."""

    __slots__ = (
        "acks",
        "broker",
        "buffer",
        "catching_up",
        "closed",
        "conflated",
        "held",
        "held_bytes",
        "md",
        "name",
        "order_path",
        "out",
        "out_bytes",
        "out_frames",
        "patterns",
        "paused",
        "pid",
        "rest",
        "sent_bytes",
        "sent_frames",
        "tx",
        "unacked",
        "unacked_bytes",
    )

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.tx: asyncio.Transport | None = None
        self.buffer = wire.Buffer()
        self.name = "?"
        self.catching_up = False  # reconnected after a broker restart: gets what it missed as it subscribes
        self.pid = 0
        self.patterns: dict[str, frozenset[bytes] | None] = {}  # pattern -> its key filter (None: every key)
        self.out: list[bytes] = []  # order-path chunks of whole frames, written once per read
        self.md: list[tuple[bytes, bytes, int]] = []  # market data (topic, chunk, frames), written after them
        self.out_frames = 0
        self.out_bytes = 0
        self.sent_frames = 0
        self.sent_bytes = 0
        self.paused = False
        self.held: deque[tuple[bytes, bytes, int]] = deque()  # market data held while the socket is behind, in order
        self.held_bytes = 0
        self.conflated: dict[tuple[bytes, bytes], bytes] = {}  # beyond md_hold_bytes: the newest per (topic, key)
        self.closed = False
        self.acks = False  # its HELLO asked for acks: what it did not acknowledge is handed over again
        self.order_path = 0  # order-path frames enqueued for it on this connection
        self.unacked: deque[tuple[int, bytes, int]] = deque()  # (order_path after it, chunk, frames)
        self.unacked_bytes = 0
        self.rest: tuple[bytes, list[wire.Span], int] | None = None  # a long read's frames from this index on

    def __repr__(self) -> str:
        return f"{self.name}[{self.pid}]"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but they have its methods
        self.tx = tx = cast(asyncio.Transport, transport)
        sock: socket.socket = transport.get_extra_info("socket")
        pid, uid, gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
        self.pid = pid
        if not self.broker.policy.allows(uid, gid):
            self.broker.stats.rejected_peers += 1
            log.warning("refused bus connection from pid %d (uid %d, gid %d): not in the fleet's group", pid, uid, gid)
            tx.write(wire.encode(wire.NOTICE, wire.FORBIDDEN, b"not a member of the fleet's group"))
            self.closed = True
            transport.close()
            return
        # paused == anything left unsent by the last write: market data is then held back here
        transport.set_write_buffer_limits(high=0, low=0)  # type: ignore[attr-defined]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PEER_SNDBUF)
        self.broker.add(self)

    def data_received(self, data: bytes) -> None:
        """Routes a read's frames, at most ROUTE_SLICE of them per loop turn (see there)."""
        if self.closed:
            return
        broker = self.broker
        broker.reads += 1
        data = self.buffer.join(data)
        try:
            spans, consumed = wire.scan(data, broker.max_frame)
        except wire.ProtocolError as exc:
            broker.violation(self, exc)
            broker.flush()
            return
        self.buffer.keep(data, consumed)
        if len(spans) > ROUTE_SLICE and self.tx is not None:
            self.rest = (data, spans, ROUTE_SLICE)
            self.tx.pause_reading()  # the rest of this peer's frames, and its next reads, stay in order
            asyncio.get_running_loop().call_soon(self.route_rest)
            spans = spans[:ROUTE_SLICE]
        self.route(data, spans)

    def route_rest(self) -> None:
        """The next ROUTE_SLICE frames of a long read, after the loop has read the other peers once."""
        if self.rest is None:
            return
        data, spans, at = self.rest
        if self.closed or at + ROUTE_SLICE >= len(spans):
            self.rest = None
            if not self.closed and self.tx is not None:
                self.tx.resume_reading()
        else:
            self.rest = (data, spans, at + ROUTE_SLICE)
            asyncio.get_running_loop().call_soon(self.route_rest)
        if not self.closed:
            self.route(data, spans[at : at + ROUTE_SLICE])

    def route(self, data: bytes, spans: list[wire.Span]) -> None:
        """Routes runs of consecutive same-topic frames as one slice: per frame only the header is read."""
        broker = self.broker
        try:
            run_topic, run_len, run_start, run_stop, count = b"", -1, 0, 0, 0
            publish, hs = wire.PUBLISH, wire.HEADER_SIZE  # locals: read per frame
            for kind, start, t1, k1, stop in spans:
                if kind == publish:
                    if k1 >= stop or data[k1] != 0x7B or data[stop - 1] != 0x7D:
                        wire.check_body(data[k1:stop], 0)
                    if t1 - start - hs == run_len and data.startswith(run_topic, start + hs):
                        count += 1
                        run_stop = stop
                        continue
                    if count:
                        broker.route(run_topic, data, run_start, run_stop, count)
                    run_topic, run_start, run_stop, count = data[start + hs : t1], start, stop, 1
                    run_len = t1 - start - hs
                    continue
                if count:
                    broker.route(run_topic, data, run_start, run_stop, count)
                    count, run_len = 0, -1
                self.control(kind, data[start + hs : t1], data[t1:k1], data[k1:stop])
            if count:
                broker.route(run_topic, data, run_start, run_stop, count)
        except wire.ProtocolError as exc:
            broker.violation(self, exc)
        broker.flush()

    def control(self, kind: int, topic: bytes, key: bytes, body: bytes) -> None:
        if kind == wire.SUBSCRIBE:
            wire.check_pattern(topic)
            self.broker.subscribe(self, topic.decode(), wire.key_filter(topic, body))
        elif kind == wire.UNSUBSCRIBE:
            self.broker.unsubscribe(self, topic.decode())
        elif kind == wire.HELLO:
            self.name = topic.decode(errors="replace")[:64]
            self.acks = hello_asks_acks(body)
            self.broker.resume(self, again=key == wire.AGAIN)
        elif kind == wire.ACK:
            self.ack(wire.acked(body))
        else:
            raise wire.ProtocolError("malformed", f"clients may not send frame kind {kind}")

    def eof_received(self) -> bool | None:
        pending = len(self.buffer.rest)
        if pending and not self.closed:
            self.broker.violation(self, wire.ProtocolError("truncated", f"{pending} bytes of a partial frame at EOF"))
        return None

    def route_pending(self) -> None:
        """What is left of a long read, routed now: its connection ended, or the broker is stopping. Every
        frame a peer sent is routed, as if it had been read in one go."""
        if self.rest is not None and not self.closed:
            data, spans, at = self.rest
            self.rest = None
            self.route(data, spans[at:])

    def connection_lost(self, exc: Exception | None) -> None:
        self.route_pending()
        self.closed = True
        self.broker.remove(self)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        """The socket took everything: market data held back meanwhile goes out, a slice per drain."""
        self.paused = False
        while (self.held or self.conflated) and not self.paused and not self.closed:
            self.write_held()

    def write_held(self) -> None:
        """Up to MD_WRITE_BYTES of held market data: in order first, then the newest per key."""
        chunks, frames, size = [], 0, 0
        held = self.held
        while held and size < MD_WRITE_BYTES:
            _, chunk, count = held.popleft()
            chunks.append(chunk)
            frames += count
            size += len(chunk)
        self.held_bytes -= size
        conflated = self.conflated
        while conflated and size < MD_WRITE_BYTES and not held:
            frame = conflated.popitem()[1]
            chunks.append(frame)
            frames += 1
            size += len(frame)
        self.count_sent(frames, self.write(b"".join(chunks)))

    def write(self, data: bytes) -> int:
        assert self.tx is not None
        self.tx.write(data)
        return len(data)

    def count_sent(self, frames: int, size: int) -> None:
        self.broker.stats.delivered += frames
        self.sent_frames += frames
        self.sent_bytes += size

    def enqueue(self, chunk: bytes, count: int) -> None:
        """An order-path chunk, written at the end of this read ahead of any market data."""
        if not self.out and not self.md:
            self.broker.dirty.append(self)
        self.out.append(chunk)
        self.out_frames += count
        self.out_bytes += len(chunk)
        if self.acks:
            self.keep_unacked(chunk, count)

    def keep_unacked(self, chunk: bytes, count: int) -> None:
        """Kept until acknowledged, up to KEEP_BYTES (a peer that far behind on acks has bigger trouble)."""
        self.order_path += count
        self.unacked.append((self.order_path, chunk, count))
        self.unacked_bytes += len(chunk)
        while self.unacked_bytes > KEEP_BYTES:
            self.unacked_bytes -= len(self.unacked.popleft()[1])

    def ack(self, count: int) -> None:
        """The peer made the first ``count`` order-path frames of this connection durable."""
        if not self.acks:
            return
        if count > self.order_path:
            raise wire.ProtocolError("malformed", f"ACK of {count} frames, {self.order_path} sent")
        unacked = self.unacked
        while unacked and unacked[0][0] <= count:
            self.unacked_bytes -= len(unacked.popleft()[1])

    def enqueue_slow(self, chunk: bytes, count: int) -> None:
        """An order-path chunk for a subscriber whose socket is behind: queued unless it overflows."""
        if self.closed:
            return
        assert self.tx is not None
        if self.tx.get_write_buffer_size() + self.out_bytes + len(chunk) > self.broker.buffer_limit:
            self.broker.slow_consumer(self, count)
            return
        self.enqueue(chunk, count)

    def enqueue_md(self, topic: bytes, chunk: bytes, count: int) -> None:
        """Market data: written after this read's order path if the socket keeps up, else held."""
        if self.closed:
            return
        if self.paused or self.held or self.conflated:
            self.hold(topic, chunk, count)
            return
        if not self.out and not self.md:
            self.broker.dirty.append(self)
        self.md.append((topic, chunk, count))

    def hold(self, topic: bytes, chunk: bytes, count: int) -> None:
        """Keep market data until the socket drains: in order while it fits, then the newest per key."""
        if not self.conflated and self.held_bytes + len(chunk) <= self.broker.md_hold_bytes:
            self.held.append((topic, chunk, count))
            self.held_bytes += len(chunk)
            return
        spans, _ = wire.scan(chunk, self.broker.max_frame)  # the run again, frame by frame: keys matter
        conflated = self.conflated
        replaced = len(conflated) + len(spans)
        for _, start, t1, k1, stop in spans:
            conflated[(topic, chunk[t1:k1])] = chunk[start:stop]
        self.broker.stats.dropped["conflated"] += replaced - len(conflated)

    def flush(self) -> None:
        """This read's order path in one write, then its market data if the socket took it all."""
        if self.closed or self.tx is None:
            return
        if self.out:
            self.count_sent(self.out_frames, self.write(self.out[0] if len(self.out) == 1 else b"".join(self.out)))
        if self.md:
            if self.paused:  # set by the write above when the socket did not take everything
                for topic, chunk, count in self.md:
                    self.hold(topic, chunk, count)
            else:
                frames = sum(count for _, _, count in self.md)
                chunk = self.md[0][1] if len(self.md) == 1 else b"".join(c for _, c, _ in self.md)
                self.count_sent(frames, self.write(chunk))

    def queued_frames(self) -> int:
        """Frames accepted for this peer and not yet sent; those in the transport are estimated
        from this peer's average frame size (the transport keeps bytes, not frames)."""
        backlog = self.tx.get_write_buffer_size() if self.tx is not None else 0
        in_transport = round(backlog * self.sent_frames / self.sent_bytes) if self.sent_bytes else 0
        return self.out_frames + in_transport  # held market data is counted as "disconnected" by remove()


def hello_asks_acks(body: bytes) -> bool:
    """Whether a HELLO's body (JSON: pid, acks) asks for acks; a body that is no such object asks for none."""
    try:
        hello = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        return False
    return isinstance(hello, dict) and hello.get("acks") is True


# A topic's subscribers of every frame, those with a key filter (and its names), and whether it is market data
Route = tuple[list[Peer], list[tuple[Peer, frozenset[bytes]]], bool]


def audience(peers: set[Peer], name: str) -> tuple[list[Peer], list[tuple[Peer, frozenset[bytes]]]]:
    """Who gets a topic: a peer with any unfiltered matching pattern gets every frame, one whose matching
    patterns all filter gets the frames whose key names one of the union of their names.

    Peers that asked for the topic (or its prefix) come before those that get it only through ``*`` (the
    journal, the gateway): they are written to first, so the process that acts on an approval is woken ahead
    of the ones that record it and, on two CPUs, is not the one left waiting for a CPU."""
    every: list[tuple[bool, Peer]] = []
    filtered = []
    for peer in peers:
        matching = [pattern for pattern in peer.patterns if wire.matches(pattern, name)]
        if not matching:
            continue
        if any(peer.patterns[pattern] is None for pattern in matching):
            every.append((matching == ["*"], peer))
        else:
            filtered.append((peer, frozenset().union(*[peer.patterns[p] or () for p in matching])))
    every.sort(key=lambda entry: entry[0])  # stable: recorders last
    return [peer for _, peer in every], filtered


class Broker:
    def __init__(self, *, max_frame: int, buffer_limit: int, group: str) -> None:
        self.max_frame = max_frame
        self.buffer_limit = buffer_limit
        self.md_hold_bytes = max(64 << 10, buffer_limit // 8)  # market data held in order for a peer that is behind
        self.policy = PeerPolicy(group)
        self.stats = BrokerStats()
        self.peers: set[Peer] = set()
        self.dirty: list[Peer] = []
        self._routes: dict[bytes, Route] = {}
        self.reads = 0  # reads from peers, so a closing broker can tell when they have fallen quiet
        self.sessions = Sessions()  # order-path events kept for named peers that went away (sessions.py)
        self.arrivals = Arrivals(time.monotonic())  # and for those not back yet after a broker restart
        self._server: asyncio.base_events.Server | None = None

    async def serve(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self.arrivals = Arrivals(time.monotonic())  # its first seconds count from serving
        self._server = await loop.create_unix_server(lambda: Peer(self), sock=sock)

    @property
    def serving(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def close(self, grace: float = CLOSE_GRACE_SEC) -> None:
        """Stop without losing what peers already sent: accept no one new, tell every peer the broker is
        closing (their clients hold what they publish from then on for the next broker), keep routing what
        arrives (frames written before a client read the notice) until the peers fall quiet, for at most
        ``grace`` seconds, then close."""
        if self._server is not None:
            self._server.close()
        self.flush()
        notice = wire.encode(wire.NOTICE, wire.CLOSING, b"the broker is stopping: hold what you publish for the next one")
        for peer in self.peers:
            if peer.tx is not None and not peer.closed:
                peer.tx.write(notice)
        loop = asyncio.get_running_loop()
        deadline, seen = loop.time() + grace, -1
        while self.peers and self.reads != seen and loop.time() < deadline:  # until 20 ms pass with nothing read
            seen = self.reads
            await asyncio.sleep(0.02)
        for peer in list(self.peers):
            peer.route_pending()
        self.flush()
        for peer in list(self.peers):
            if peer.tx is not None:
                peer.tx.close()
        if self._server is not None:
            await self._server.wait_closed()

    @property
    def subscriptions(self) -> int:
        return sum(len(p.patterns) for p in self.peers)

    @property
    def queued_bytes(self) -> int:
        return sum(p.tx.get_write_buffer_size() for p in self.peers if p.tx is not None)

    def add(self, peer: Peer) -> None:
        self.peers.add(peer)
        self.stats.accepted_peers += 1

    def remove(self, peer: Peer) -> None:
        if peer in self.peers:
            self.peers.discard(peer)
            if self._serving_peers() and not any(p.name == peer.name for p in self.peers):
                unacked = [(chunk, count) for _, chunk, count in peer.unacked]
                self.sessions.leave(peer.name, set(peer.patterns), time.monotonic(), unacked)
            if peer.patterns:
                self._routes.clear()
            held = len(peer.conflated) + sum(count for _, _, count in (*peer.md, *peer.held))
            if held:
                self.stats.dropped["disconnected"] += held
                peer.conflated.clear()
                peer.md.clear()
                peer.held.clear()
                peer.held_bytes = 0

    def subscribe(self, peer: Peer, pattern: str, names: frozenset[bytes] | None) -> None:
        peer.patterns[pattern] = names
        self._routes.clear()
        if peer.catching_up and self.arrivals.open:
            missed = self.arrivals.missed(peer.name, pattern, time.monotonic())
            for early in missed:
                peer.enqueue(early.chunk, early.count)
            if missed:
                log.info("%s reconnected: %d %s events published before it was back delivered", peer.name,
                         sum(e.count for e in missed), pattern)

    def unsubscribe(self, peer: Peer, pattern: str) -> None:
        peer.patterns.pop(pattern, None)
        self._routes.clear()

    def _serving_peers(self) -> bool:
        """Still serving (a broker that is closing keeps nothing for the peers it closes)."""
        return self._server is not None and self._server.is_serving()

    def resume(self, peer: Peer, *, again: bool) -> None:
        """A peer said its name: hand it what was kept for that name while it was away, before anything else.
        One that reconnects (``again``) and is new to this broker was connected to the one before it."""
        first = self.arrivals.arrived(peer.name)
        peer.catching_up = again and first and self.arrivals.open
        session = self.sessions.resume(peer.name, time.monotonic())
        if session is None:
            return
        for chunk, count in session.chunks:
            peer.enqueue(chunk, count)
        log.info("%s is back: %d events kept for it while it was away delivered%s", peer.name, session.frames,
                 f", {session.lost} more did not fit" if session.lost else "")

    def route(self, topic: bytes, data: bytes, start: int, stop: int, count: int) -> None:
        """Hand ``count`` consecutive frames of one topic (data[start:stop]) to its subscribers."""
        route = self._routes.get(topic)
        if route is None:
            wire.check_topic(topic)  # once per topic: only valid topics are ever cached
            route = self._routes[topic] = (*audience(self.peers, topic.decode()), topic.startswith(MARKET_DATA_MARKS))
        self.stats.published[topic] += count
        subs, filtered, marketdata = route
        if self.sessions.by_name and not marketdata:
            chunk = data if start == 0 and stop == len(data) else data[start:stop]
            self.stats.dropped["disconnected"] += self.sessions.keep(topic, chunk, count, time.monotonic())
        if self.arrivals.open and not marketdata:
            self.arrivals.keep(topic, data[start:stop], count, frozenset(p.name for p in subs), time.monotonic())
        if filtered:
            self.route_filtered(topic, data[start:stop], filtered)
        if not subs:
            return
        chunk = data if start == 0 and stop == len(data) else data[start:stop]
        if marketdata:
            for peer in subs:
                peer.enqueue_md(topic, chunk, count)
            return
        for peer in subs:
            if peer.paused or peer.closed:
                peer.enqueue_slow(chunk, count)
            else:
                peer.enqueue(chunk, count)

    def route_filtered(self, topic: bytes, chunk: bytes, filtered: list[tuple[Peer, frozenset[bytes]]]) -> None:
        """Market data for key-filtered subscribers: each gets the frames of the run whose key it named."""
        spans, _ = wire.scan(chunk, self.max_frame)
        parts = [chunk[t1:k1].split(wire.KEY_SEPARATOR) for _, _, t1, k1, _ in spans]  # once, for every peer
        for peer, names in filtered:
            disjoint = names.isdisjoint
            wanted = [chunk[start:stop] for (_, start, _, _, stop), key in zip(spans, parts, strict=True) if not disjoint(key)]
            self.stats.filtered += len(spans) - len(wanted)
            if wanted:
                peer.enqueue_md(topic, b"".join(wanted), len(wanted))

    def flush(self) -> None:
        """One write per lane per subscriber per read: batching is most of the broker's throughput."""
        for peer in self.dirty:
            peer.flush()
            peer.out.clear()
            peer.md.clear()
            peer.out_frames = peer.out_bytes = 0
        self.dirty.clear()

    def violation(self, peer: Peer, exc: wire.ProtocolError) -> None:
        self.stats.protocol_errors[exc.reason] += 1
        self.stats.disconnects["protocol_error"] += 1
        log.warning("dropping bus peer %r: %s", peer, exc)
        self._drop(peer)

    def slow_consumer(self, peer: Peer, incoming: int) -> None:
        self.stats.dropped["slow_consumer"] += incoming + peer.queued_frames()
        self.stats.disconnects["slow_consumer"] += 1
        log.warning(
            "disconnecting slow subscriber %r: over %d queued bytes; it will resync", peer, self.buffer_limit
        )
        self._drop(peer)

    def _drop(self, peer: Peer) -> None:
        peer.closed = True
        peer.out.clear()
        peer.out_frames = peer.out_bytes = 0
        self.remove(peer)
        if peer.tx is not None:
            peer.tx.abort()
