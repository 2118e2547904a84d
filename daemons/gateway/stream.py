"""The event stream behind /ws/events: numbered, resumable, and never a brake on the bus.

Every fleet event the gateway receives gets the next sequence number and goes into a bounded ring
(``ring_events``) and into the queue of each client subscribed to its topic. The bus handler only
appends and ``put_nowait``s, so it never waits for a browser: a client whose queue is full
(``ws_queue_events``) is dropped, and so is one whose socket took longer than ``ws_send_timeout_sec``
to accept a message (a send blocks once the kernel's and the proxy's buffers are full). A client that
comes back asks for ``since`` its last sequence number and gets what the ring still holds first, or a
``gap`` message saying from where on it must re-read the REST endpoints. The numbers start at the
wall clock in microseconds: a restarted gateway numbers above everything its previous life sent (unless
that one numbered more than an event a microsecond), so a console resuming across a restart, whose ring
is gone, gets a gap rather than silence.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson

from ..runtime import wire
from ..runtime.envelope import Event

log = logging.getLogger("algo.gateway")

# What the gateway takes from the bus and streams: the order path and the daemons' status, never
# market data (the browser does not need 10k ticks/s, and they would evict everything else from the ring).
TOPICS = ("strategy.signal", "risk.*", "execution.*", "control.*", "health.heartbeat")

Send = Callable[[str], Awaitable[None]]


@dataclass(eq=False)  # hashed by identity: clients live in a set
class Client:
    """One WebSocket client: its topic patterns and its bounded queue of encoded messages."""

    patterns: tuple[str, ...]
    queue: asyncio.Queue[str]
    dropped: str | None = None  # why it was dropped (then nothing more is queued for it)

    def wants(self, topic: str) -> bool:
        return any(wire.matches(p, topic) for p in self.patterns)


def _first_seq() -> int:
    return time.time_ns() // 1000


@dataclass
class Stream:
    ring_size: int
    queue_size: int
    seq: int = field(default_factory=_first_seq)  # the last number given
    first: int = field(init=False)  # where this life's numbers start
    ring: deque[tuple[int, str, str]] = field(init=False)  # (seq, topic, message)
    clients: set[Client] = field(default_factory=set)
    dropped: Counter[str] = field(default_factory=Counter)  # clients dropped, by reason
    sent = 0  # messages written to clients

    def __post_init__(self) -> None:
        self.ring = deque(maxlen=self.ring_size)
        self.first = self.seq

    @property
    def numbered(self) -> int:
        """Events numbered since this gateway started."""
        return self.seq - self.first

    def publish(self, event: Event) -> None:
        """From the bus handler: number it, keep it, offer it to every interested client. Never waits."""
        self.seq += 1
        message = orjson.dumps({"type": "event", "seq": self.seq, "topic": event.type, "event": {
            "id": event.id, "ts": event.ts, "source": event.source, "trace": event.trace, "key": event.key,
            "payload": event.payload}}).decode()
        self.ring.append((self.seq, event.type, message))
        for client in list(self.clients):
            if client.wants(event.type):
                self._offer(client, message)

    def attach(self, patterns: tuple[str, ...], since: int | None) -> Client:
        """A client subscribed to ``patterns``; with ``since``, what the ring holds after it comes first.

        Done without awaiting, so no event can fall between the replay and the live stream."""
        client = Client(patterns, asyncio.Queue(self.queue_size))
        if since is not None:
            oldest = self.ring[0][0] if self.ring else self.seq + 1
            if since + 1 < oldest:
                self._offer(client, orjson.dumps({"type": "gap", "since": since, "resumed_at": oldest}).decode())
            for seq, topic, message in self.ring:
                if seq > since and client.wants(topic):
                    self._offer(client, message)
        if client.dropped is None:
            self.clients.add(client)
        return client

    def detach(self, client: Client) -> None:
        self.clients.discard(client)

    def drop(self, client: Client, reason: str) -> None:
        if client.dropped is None:
            client.dropped = reason
            self.dropped[reason] += 1
            log.warning("dropped a WebSocket client: %s", reason, extra={"WS_DROP": reason})
        self.clients.discard(client)

    def _offer(self, client: Client, message: str) -> None:
        try:
            client.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.drop(client, "queue_full")

    async def pump(self, client: Client, send: Send, timeout: float) -> None:
        """Write the client's queue to its socket until it is dropped; a send slower than ``timeout`` drops it."""
        while client.dropped is None:
            message = await client.queue.get()
            if client.dropped is not None:
                return
            try:
                await asyncio.wait_for(send(message), timeout)
            except TimeoutError:
                self.drop(client, "send_timeout")
                return
            self.sent += 1
