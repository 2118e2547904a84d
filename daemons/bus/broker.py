"""The broker: routes PUBLISH frames to subscribers by topic without decoding their bodies.

A slow subscriber never stalls anyone: its frames queue in its own bounded buffer; once the
buffer passes the high-water mark, ``marketdata.*`` frames are conflated to the latest per
(topic, key) and anything else that would overflow it disconnects that subscriber, whose client
reconnects and resubscribes (the resync). Every drop is counted.
"""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import pwd
import socket
import struct
from collections import Counter
from dataclasses import dataclass, field

from ..runtime import wire
from ..runtime.envelope import CONFLATED_PREFIX

log = logging.getLogger("algo.bus")

_PEERCRED = struct.Struct("3i")
_CONFLATED = CONFLATED_PREFIX.encode()


@dataclass
class BrokerStats:
    published: Counter[bytes] = field(default_factory=Counter)
    delivered: int = 0
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
            self.gid, self.members = gr.gr_gid, set(gr.gr_mem)
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
        "broker", "tx", "reader", "name", "pid", "patterns", "out", "out_bytes", "paused", "conflated", "closed",
    )

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.tx: asyncio.Transport | None = None
        self.reader = wire.FrameReader(broker.max_frame)
        self.name = "?"
        self.pid = 0
        self.patterns: set[str] = set()
        self.out: list[bytes] = []
        self.out_bytes = 0
        self.paused = False
        self.conflated: dict[tuple[bytes, bytes], bytes] = {}
        self.closed = False

    def __repr__(self) -> str:
        return f"{self.name}[{self.pid}]"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tx = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport subclasses
        sock: socket.socket = transport.get_extra_info("socket")
        pid, uid, gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
        self.pid = pid
        if not self.broker.policy.allows(uid, gid):
            self.broker.stats.rejected_peers += 1
            log.warning("refused bus connection from pid %d (uid %d, gid %d): not in the fleet's group", pid, uid, gid)
            transport.write(wire.encode(wire.NOTICE, b"forbidden", b"not a member of the fleet's group"))
            self.closed = True
            transport.close()
            return
        high = self.broker.high_water
        transport.set_write_buffer_limits(high=high, low=high // 4)
        self.broker.add(self)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        broker = self.broker
        try:
            for frame in self.reader.feed(data):
                kind = frame[0]
                if kind == wire.PUBLISH:
                    broker.route(frame)
                elif kind == wire.SUBSCRIBE:
                    wire.check_pattern(frame.topic)
                    broker.subscribe(self, frame.topic.decode())
                elif kind == wire.UNSUBSCRIBE:
                    broker.unsubscribe(self, frame.topic.decode())
                elif kind == wire.HELLO:
                    self.name = frame.topic.decode(errors="replace")[:64]
                else:
                    raise wire.ProtocolError("malformed", f"clients may not send frame kind {kind}")
        except wire.ProtocolError as exc:
            broker.violation(self, exc)
        broker.flush()

    def eof_received(self) -> bool | None:
        if self.reader.pending and not self.closed:
            self.broker.violation(self, wire.ProtocolError("truncated", f"{self.reader.pending} bytes of a partial frame at EOF"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.broker.remove(self)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.conflated and not self.closed:
            frames = list(self.conflated.values())
            self.conflated.clear()
            self.broker.stats.delivered += len(frames)
            assert self.tx is not None
            self.tx.write(b"".join(frames))

    def enqueue_slow(self, frame: wire.Frame) -> bool:
        """Queue for a subscriber that is behind; False when the frame had to be dropped."""
        if self.closed:
            return False
        if frame.topic.startswith(_CONFLATED):
            replaced = self.conflated.get((frame.topic, frame.key))
            self.conflated[(frame.topic, frame.key)] = frame.raw
            if replaced is not None:
                self.broker.stats.dropped["conflated"] += 1
            return False
        assert self.tx is not None
        if self.tx.get_write_buffer_size() + self.out_bytes + len(frame.raw) > self.broker.buffer_limit:
            self.broker.slow_consumer(self)
            return False
        if not self.out:
            self.broker._dirty.append(self)
        self.out.append(frame.raw)
        self.out_bytes += len(frame.raw)
        return True


class Broker:
    def __init__(self, *, max_frame: int, buffer_limit: int, group: str) -> None:
        self.max_frame = max_frame
        self.buffer_limit = buffer_limit
        self.high_water = max(64 << 10, buffer_limit // 8)
        self.policy = PeerPolicy(group)
        self.stats = BrokerStats()
        self.peers: set[Peer] = set()
        self._routes: dict[bytes, list[Peer]] = {}
        self._dirty: list[Peer] = []
        self._server: asyncio.base_events.Server | None = None

    async def serve(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: Peer(self), sock=sock)

    @property
    def serving(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
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
            if peer.patterns:
                self._routes.clear()
            if peer.conflated:
                self.stats.dropped["disconnected"] += len(peer.conflated)
                peer.conflated.clear()

    def subscribe(self, peer: Peer, pattern: str) -> None:
        peer.patterns.add(pattern)
        self._routes.clear()

    def unsubscribe(self, peer: Peer, pattern: str) -> None:
        peer.patterns.discard(pattern)
        self._routes.clear()

    def route(self, frame: wire.Frame) -> None:
        """The hot path: a plain append per subscriber that keeps up; the rest in enqueue_slow."""
        _, topic, _, raw, offset = frame
        if offset >= len(raw) or raw[offset] != 0x7B or raw[-1] != 0x7D:
            wire.check_body(raw, offset)
        subs = self._routes.get(topic)
        if subs is None:
            wire.check_topic(topic)  # once per topic: only valid topics are ever cached
            name = topic.decode()
            subs = self._routes[topic] = [p for p in self.peers if any(wire.matches(pat, name) for pat in p.patterns)]
        self.stats.published[topic] += 1
        delivered = 0
        dirty = self._dirty
        for peer in subs:
            if peer.paused or peer.closed:
                delivered += peer.enqueue_slow(frame)
                continue
            out = peer.out
            if not out:
                dirty.append(peer)
            out.append(raw)
            delivered += 1
        self.stats.delivered += delivered

    def flush(self) -> None:
        """One write per subscriber per read: batching is most of the broker's throughput."""
        for peer in self._dirty:
            if peer.out and not peer.closed and peer.tx is not None:
                peer.tx.write(b"".join(peer.out))
            peer.out.clear()
            peer.out_bytes = 0
        self._dirty.clear()

    def violation(self, peer: Peer, exc: wire.ProtocolError) -> None:
        self.stats.protocol_errors[exc.reason] += 1
        self.stats.disconnects["protocol_error"] += 1
        log.warning("dropping bus peer %r: %s", peer, exc)
        self._drop(peer)

    def slow_consumer(self, peer: Peer) -> None:
        lost = 1 + len(peer.out) + len(peer.conflated)
        self.stats.dropped["slow_consumer"] += lost
        self.stats.disconnects["slow_consumer"] += 1
        log.warning(
            "disconnecting slow subscriber %r: over %d queued bytes; it will resync", peer, self.buffer_limit
        )
        self._drop(peer)

    def _drop(self, peer: Peer) -> None:
        peer.closed = True
        peer.out.clear()
        peer.out_bytes = 0
        self.remove(peer)
        if peer.tx is not None:
            peer.tx.abort()
