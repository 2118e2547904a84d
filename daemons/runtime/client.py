"""The bus client every daemon uses: publish events, subscribe by topic or prefix, detect gaps."""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from typing import Any, Callable

import orjson

from . import wire
from .config import BusSection
from .envelope import CONFLATED_PREFIX, Event, EventFactory
from .transport import Transport, UnixTransport

log = logging.getLogger("algo.bus")

_new = tuple.__new__  # builds an Event without NamedTuple's Python-level __new__

Handler = Callable[[Event], None]


LAG_SAMPLE_MASK = 63  # one event in 64: the delivery lag histogram costs nothing on the hot path
LAG_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class LagSample:
    """A Prometheus-style histogram of publish-to-handler lag (seconds), as plain numbers."""

    __slots__ = ("counts", "total", "n")

    def __init__(self) -> None:
        self.counts = [0] * len(LAG_BUCKETS)
        self.total = 0.0
        self.n = 0

    def observe(self, published_ns: int) -> None:
        lag = max(0.0, (time.time_ns() - published_ns) / 1e9)
        self.n += 1
        self.total += lag
        for i, bound in enumerate(LAG_BUCKETS):
            if lag <= bound:
                self.counts[i] += 1
                break

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative, as the exposition format wants them."""
        out, running = [], 0
        for bound, count in zip(LAG_BUCKETS, self.counts):
            running += count
            out.append((repr(bound), running))
        out.append(("+Inf", self.n))
        return out


class BusClient:
    """Handlers run on the event loop and must be quick; hand slow work to a queue or task.

    >>> bus = BusClient.for_config(config.bus, source="heartbeat")
    >>> bus.subscribe("control.*", on_control)
    >>> await bus.start()
    >>> bus.publish("health.heartbeat", {"daemon": "heartbeat"})
    """

    def __init__(self, transport: Transport, source: str) -> None:
        self.source = source
        self.transport = transport
        self.events = EventFactory(source)
        self._handlers: list[tuple[str, Handler]] = []
        self._routes: dict[bytes, list[Handler]] = {}
        self._topics: dict[str, bytes] = {}
        self._last_seq: dict[tuple[str, str], int] = {}
        self.received = 0
        self.gaps = 0
        self.decode_errors = 0
        self.handler_errors = 0
        self.published: Counter[str] = Counter()
        self.lag = LagSample()
        transport.on_batch = self._on_batch

    @classmethod
    def for_config(cls, bus: BusSection, source: str, socket_path: str | None = None) -> "BusClient":
        hello = wire.encode(wire.HELLO, source.encode(), orjson.dumps({"pid": os.getpid()}))
        client: BusClient
        transport = UnixTransport(
            socket_path or str(bus.socket),
            hello,
            max_frame=bus.max_frame_bytes,
            buffer_bytes=bus.publish_buffer_bytes,
            reconnect_min=bus.reconnect_min_sec,
            reconnect_max=bus.reconnect_max_sec,
            resubscribe=lambda: client.subscription_frames(),
        )
        client = cls(transport, source)
        return client

    async def start(self) -> None:
        await self.transport.start()

    async def close(self) -> None:
        await self.transport.close()

    @property
    def connected(self) -> bool:
        return self.transport.connected

    def subscribe(self, pattern: str, handler: Handler) -> None:
        """Exact topic, 'prefix.*' or '*'. Survives reconnects: the client resubscribes itself."""
        wire.check_pattern(pattern.encode())
        new = all(p != pattern for p, _ in self._handlers)
        self._handlers.append((pattern, handler))
        self._routes.clear()
        if new and self.transport.connected:
            self.transport.send(wire.encode(wire.SUBSCRIBE, pattern.encode()))

    def subscription_frames(self) -> list[bytes]:
        patterns = dict.fromkeys(p for p, _ in self._handlers)
        return [wire.encode(wire.SUBSCRIBE, p.encode()) for p in patterns]

    def publish(self, topic: str, payload: dict[str, Any], *, key: str = "", trace: str | None = None) -> Event:
        """Stamp and send an event. Never blocks; a full outgoing buffer drops it (counted)."""
        event, body = self.events.stamp(topic, payload, trace, key)
        self.transport.send(wire.encode(wire.PUBLISH, self._topics.get(topic) or self._topic_bytes(topic), body, key.encode()))
        self.published[topic] += 1
        return event

    def _topic_bytes(self, topic: str) -> bytes:
        """A topic not seen before: validated once, so a bad topic fails here and not as a dropped connection."""
        encoded = topic.encode()
        wire.check_topic(encoded)
        self._topics[topic] = encoded
        return encoded

    def _on_batch(self, data: bytes, spans: list[wire.Span]) -> None:
        """Decode and dispatch every PUBLISH frame of one read; bodies are parsed in place."""
        view = memoryview(data)
        loads = orjson.loads
        routes = self._routes
        last_seq = self._last_seq
        for _, start, t1, k1, stop in spans:
            self.received += 1
            try:
                d = loads(view[k1:stop])
                event = _new(Event, (d["type"], d["source"], d["seq"], d["payload"], d["id"], d["ts"], d["trace"],
                                     data[t1:k1].decode() if k1 > t1 else ""))
            except (orjson.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
                self.decode_errors += 1
                log.warning("undecodable event on %s dropped: %s", data[start + wire.HEADER_SIZE : t1], exc)
                continue
            if not self.received & LAG_SAMPLE_MASK:
                self.lag.observe(event.ts)
            stream = (event.source, event.type)
            last = last_seq.get(stream, 0)
            last_seq[stream] = seq = event.seq
            if seq > last + 1 and last:
                self._gap(event, last)
            topic = data[start + wire.HEADER_SIZE : t1]
            handlers = routes.get(topic)
            if handlers is None:
                name = topic.decode()
                handlers = routes[topic] = [h for p, h in self._handlers if wire.matches(p, name)]
            for handler in handlers:
                try:
                    handler(event)
                except Exception:
                    self.handler_errors += 1
                    log.exception("handler for %s failed", event.type, extra={"TRACE_ID": event.trace})

    def _gap(self, event: Event, last: int) -> None:
        """seq jumped past last + 1: events were lost upstream. (A lower seq means the source
        restarted and counts from 1 again; nothing was lost.)"""
        missed = event.seq - last - 1
        self.gaps += missed
        if not event.type.startswith(CONFLATED_PREFIX):  # conflation skips ticks by design
            log.warning("missed %d %s events from %s (seq %d -> %d)", missed, event.type, event.source, last, event.seq)
