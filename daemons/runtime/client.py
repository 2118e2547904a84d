"""The bus client every daemon uses: publish events, subscribe by topic or prefix, detect gaps."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable
from itertools import islice
from typing import Any, Literal

import msgspec
import orjson

from . import wire
from .config import BusSection
from .envelope import MARKET_DATA_MARKS, MARKET_DATA_PREFIXES, Event, EventFactory, decode_body, is_market_data, set_key
from .samples import Samples
from .transport import Transport, UnixTransport

log = logging.getLogger("algo.bus")

Handler = Callable[[Event], None]
# A topic's name, its handlers for every event, its latest_only ones, the last seq seen per source, and
# whether seqs are checked (not when every matching pattern filters keys: the broker skips the rest by design)
Route = tuple[str, list[Handler], list[Handler], dict[str, int], bool]

_MD = MARKET_DATA_MARKS
_head, _PUBLISH = wire.HEADER.pack, wire.PUBLISH
MD_SLICE = 16  # held ticks dispatched per loop turn: the most an order-path event read meanwhile waits behind
MD_QUEUE_FRAMES = 2048  # held ticks (or bytes of the reads holding them) past which the daemon is behind and
MD_QUEUE_BYTES = 4 << 20  # newer ticks are kept only as the newest per (topic, key) until it catches up


LAG_SAMPLE_MASK = 63  # one event in 64: the delivery lag histogram costs nothing on the hot path
MALFORMED_LOG_SEC = 60.0
LAG_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


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
        self._handlers: list[tuple[str, Handler, bool]] = []  # pattern, handler, latest_only
        self._filters: dict[str, frozenset[str]] = {}  # market-data pattern -> the only key names it receives
        self._routes: dict[bytes, Route] = {}
        self._md: deque[tuple[bytes, list[wire.Span]]] = deque()  # held market data: a read and its tick frames
        self._md_frames = 0
        self._md_bytes = 0
        self._latest: dict[tuple[bytes, bytes], bytes] = {}  # (topic, key) -> newest frame, for latest_only handlers
        self._behind: dict[tuple[bytes, bytes], bytes] = {}  # the same, for the others once MD_QUEUE_FRAMES are held
        self._draining = False
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self.conflated = 0  # ticks skipped because a newer one of their key came first (latest_only, or behind)
        self._topics: dict[str, tuple[bytes, bool]] = {}  # topic -> its bytes, and whether it is of the order path
        self._last_seq: dict[str, dict[str, int]] = {}  # topic -> source -> last seq (kept across re-routing)
        self._md_subscribed = False  # any pattern that can match market data: only then are reads split in lanes
        self.received = 0
        self.gaps = 0
        self.malformed: Counter[str] = Counter()  # by topic
        self._malformed_logged: dict[tuple[str, str], float] = {}
        self.handler_errors = 0
        self.lag = Samples(LAG_BUCKETS)  # publish-to-handler lag, seconds
        transport.on_batch = self._on_batch

    @classmethod
    def for_config(cls, bus: BusSection, source: str, socket_path: str | None = None, *,
                   acks: bool = False) -> BusClient:
        """``acks``: the daemon calls ``acknowledge()`` once what it received is durable, and the broker
        hands what it was sent and did not acknowledge to its next connection (wire.py: ACK)."""
        hello = wire.encode(wire.HELLO, source.encode(), orjson.dumps({"pid": os.getpid(), "acks": acks}))
        client: BusClient
        transport = UnixTransport(
            socket_path or str(bus.socket),
            hello,
            max_frame=bus.max_frame_bytes,
            buffer_bytes=bus.publish_buffer_bytes,
            reconnect_min=bus.reconnect_min_sec,
            reconnect_max=bus.reconnect_max_sec,
            resubscribe=lambda: client.subscription_frames(),
            acks=acks,
        )
        client = cls(transport, source)
        return client

    async def start(self) -> None:
        await self.transport.start()

    async def close(self) -> None:
        """Disconnect; ticks still held are dropped so that no handler runs once the daemon is stopping."""
        self._md.clear()
        self._md_frames = self._md_bytes = 0
        self._behind.clear()
        self._latest.clear()
        await self.transport.close()

    @property
    def connected(self) -> bool:
        return self.transport.connected

    def acknowledge(self) -> None:
        """Every order-path event handled so far is durable: the broker need not hand it over again."""
        self.transport.acknowledge()

    def subscribe(self, pattern: str, handler: Handler, *, latest_only: bool = False) -> None:
        """Exact topic, 'prefix.*' or '*'. Survives reconnects: the client resubscribes itself.

        ``latest_only`` (market data only): when ticks arrive faster than the daemon handles them, the
        handler gets the newest tick of each key and the older ones are skipped (counted in
        ``conflated``). For a consumer of latest values (marks, the instrument list); not for one whose
        result depends on every tick (an EMA), nor for the journal.
        """
        wire.check_pattern(pattern.encode())
        if latest_only and not is_market_data(pattern):
            raise ValueError(f"latest_only is for market data (topics under {', '.join(MARKET_DATA_PREFIXES)}), not {pattern!r}")
        new = all(p != pattern for p, _, _ in self._handlers)
        self._handlers.append((pattern, handler, latest_only))
        self._routes.clear()
        self._md_subscribed = any(p == "*" or is_market_data(p) for p, _, _ in self._handlers)
        if new and self.transport.connected:
            self.transport.send(wire.subscribe(pattern, self._filters.get(pattern)))

    def filter_keys(self, pattern: str, names: frozenset[str] | None) -> None:
        """Receive only the market data of ``pattern`` whose key names one of ``names`` (a tick's token,
        symbol or underlying); None receives every key again. The broker applies it, so the rest is never
        sent, read or decoded. Seqs of a filtered topic skip by design and are not counted as gaps."""
        encoded = pattern.encode()
        wire.check_pattern(encoded)
        if names is not None:
            try:
                wire.key_filter(encoded, orjson.dumps(sorted(names)))  # the broker's own checks, before it sees them
            except wire.ProtocolError as exc:
                raise ValueError(f"key filter for {pattern!r}: {exc}") from None
        if self._filters.get(pattern) == names:
            return
        if names is None:
            self._filters.pop(pattern, None)
        else:
            self._filters[pattern] = names
        self._routes.clear()
        if any(p == pattern for p, _, _ in self._handlers) and self.transport.connected:
            self.transport.send(wire.subscribe(pattern, names))

    def subscription_frames(self) -> list[bytes]:
        patterns = dict.fromkeys(p for p, _, _ in self._handlers)
        return [wire.subscribe(p, self._filters.get(p)) for p in patterns]

    def publish(self, topic: str, payload: dict[str, Any], *, key: str = "", trace: str | None = None) -> Event:
        """Stamp and send an event. Never blocks; a full outgoing buffer drops it (counted).

        The first order-path event of a loop turn is written at once, not at the end of the turn: the rest
        of the publisher's turn (its log line, the rest of a batch of ticks) was ~0.3-0.4 ms of every hop
        (bench/pipeline/README.md). The turn's later events, and market data, go out once per turn, a
        burst in one write (transport.py)."""
        event, body = self.events.stamp(topic, payload, trace, key)
        name, order_path = self._topics.get(topic) or self._topic_bytes(topic)
        kb = key.encode()
        # wire.encode inlined: this is every event's path (bench/bus/hotpaths.py)
        self.transport.send(_head(3 + len(name) + len(kb) + len(body), _PUBLISH, len(name), len(kb)) + name + kb + body,
                            order_path)
        return event

    def flush(self) -> None:
        """Write what was published in this loop turn now: the later events of a decision that makes several
        (a reversal's exit and entry, a straddle's legs) leave with the first, not after the rest of the turn."""
        self.transport.flush()

    @property
    def published(self) -> dict[str, int]:
        """Events published, by topic: every publish stamps one, so the stamp counts are the count."""
        return self.events.stamped

    def _topic_bytes(self, topic: str) -> tuple[bytes, bool]:
        """A topic not seen before: validated once, so a bad topic fails here and not as a dropped connection.
        With it, whether it is of the order path (written at once: see publish)."""
        encoded = topic.encode()
        wire.check_topic(encoded)
        lane = self._topics[topic] = (encoded, not encoded.startswith(_MD))
        return lane

    def _route(self, topic: bytes) -> Route:
        name = topic.decode()
        every = [h for p, h, latest in self._handlers if not latest and wire.matches(p, name)]
        latest = [h for p, h, latest in self._handlers if latest and wire.matches(p, name)]
        whole = any(p not in self._filters for p, _, _ in self._handlers if wire.matches(p, name))
        route = self._routes[topic] = (name, every, latest, self._last_seq.setdefault(name, {}), whole)
        return route

    def _on_batch(self, data: bytes, spans: list[wire.Span]) -> None:
        """One read: its order-path events are dispatched now, its market data on later loop turns.

        So an approval read together with (or while the daemon is still working through) a burst of
        ticks waits for at most MD_SLICE of them, never for the whole burst. latest_only handlers are
        brought up to date first (at most one tick per key): risk checks a signal against the newest mark.
        """
        marketdata = [span for span in spans if data.startswith(_MD, span[1] + wire.HEADER_SIZE)] if self._md_subscribed else None
        if not marketdata:
            self._deliver(data, spans, 1)
            return
        self._hold(data, marketdata)
        if len(marketdata) < len(spans):
            if self._latest:
                self._deliver_held(self._latest, len(self._latest), 2)
            self._deliver(data, [span for span in spans if not data.startswith(_MD, span[1] + wire.HEADER_SIZE)], 1)

    def _hold(self, data: bytes, spans: list[wire.Span]) -> None:
        """Queue market data: every tick for ordinary handlers, the newest per (topic, key) for latest_only ones.

        A daemon more than MD_QUEUE_FRAMES ticks behind keeps reading (order-path frames must get in) and
        keeps only the newest tick per key beyond that, as the broker would for a reader that stopped.
        """
        routes, every = self._routes, []
        latest, behind = self._latest, self._behind
        room = MD_QUEUE_FRAMES - self._md_frames if self._md_bytes < MD_QUEUE_BYTES else 0
        for span in spans:
            _, start, t1, k1, stop = span
            topic = data[start + wire.HEADER_SIZE : t1]
            route = routes.get(topic) or self._route(topic)
            if route[1]:
                if room > 0 and not behind:
                    every.append(span)
                    room -= 1
                else:
                    self._conflate(behind, (topic, data[t1:k1]), data[start:stop])
            if route[2]:
                self._conflate(latest, (topic, data[t1:k1]), data[start:stop])
        if every:
            self._md.append((data, every))
            self._md_frames += len(every)
            self._md_bytes += len(data)
        if not self._draining and (self._md or behind or latest):
            self._draining = True
            self._loop().call_soon(self._drain)

    def _conflate(self, held: dict[tuple[bytes, bytes], bytes], slot: tuple[bytes, bytes], frame: bytes) -> None:
        """Keep ``frame`` (a copy: a held read buffer would pin 256 KiB) as the newest of its (topic, key)."""
        before = len(held)
        held[slot] = frame
        self.conflated += before == len(held)

    def _drain(self) -> None:
        """Dispatch up to MD_SLICE held ticks, then give the loop back (order-path reads go first)."""
        budget = MD_SLICE
        md = self._md
        while md and budget:
            data, spans = md[0]
            if len(spans) > budget:
                md[0] = (data, spans[budget:])
                spans = spans[:budget]
            else:
                md.popleft()
                self._md_bytes -= len(data)
            self._md_frames -= len(spans)
            budget -= len(spans)
            self._deliver(data, spans, 1)
        if self._behind and budget and not md:
            budget -= self._deliver_held(self._behind, budget, 1)
        if self._latest and budget:
            self._deliver_held(self._latest, budget, 2)
        self._draining = bool(md or self._behind or self._latest)
        if self._draining:
            self._loop().call_soon(self._drain)

    def _deliver_held(self, held: dict[tuple[bytes, bytes], bytes], count: int, which: Literal[1, 2]) -> int:
        """The newest held tick of up to ``count`` keys to the route's handlers (1: every event, 2: latest_only).

        Oldest key first, as they were held: past the queue's bound a burst still reaches its handlers in
        publish order, only thinned to the newest tick per key.
        """
        if count >= len(held):
            frames = list(held.values())
            held.clear()
        else:
            frames = [held.pop(slot) for slot in list(islice(held, count))]
        data = b"".join(frames)
        self._deliver(data, wire.scan(data, len(data))[0], which, gaps=False)
        return len(frames)

    def _deliver(self, data: bytes, spans: list[wire.Span], which: Literal[1, 2], gaps: bool = True) -> None:
        """Decode, check and dispatch frames to the route's handlers (1: every event, 2: latest_only).

        Bodies are parsed in place. A malformed envelope (not JSON, a key missing, a value of the wrong
        type, ``type`` not the frame's topic) is counted and skipped: it must cost neither its
        neighbours nor the connection.
        """
        routes = self._routes
        received = self.received
        self.received += len(spans)
        hs = wire.HEADER_SIZE
        for _, start, t1, k1, stop in spans:
            received += 1
            topic = data[start + hs : t1]
            route = routes.get(topic) or self._route(topic)
            name = route[0]
            try:
                event = decode_body(data[k1:stop])  # a bytes slice: cheaper than a memoryview's for ~350 bytes
                if k1 > t1 or event.key:  # the header's key, never one a body smuggled in
                    set_key(event, "key", data[t1:k1].decode())
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                self._malformed(name, malformed_kind(exc))
                continue
            kind = event.type
            if kind != name:
                self._malformed(name, "type is not the frame's topic")
                continue
            if not received & LAG_SAMPLE_MASK:
                self.lag.observe(max(0.0, (time.time_ns() - event.ts) / 1e9))
            seqs = route[3]
            source = event.source
            seq = event.seq
            last = seqs.get(source, 0)
            if gaps and route[4]:
                seqs[source] = seq
                if seq > last + 1 and last:
                    self._gap(event, last)
            elif seq > last:
                # Held ticks come newest per key, so their seqs skip by design (counted as conflated,
                # not as gaps); the next tick read in order must not count them as lost either.
                seqs[source] = seq
            for handler in route[which]:
                try:
                    handler(event)
                except Exception:
                    self.handler_errors += 1
                    log.exception("handler for %s failed", kind, extra={"TRACE_ID": event.trace})

    def _loop(self) -> asyncio.AbstractEventLoop:
        if self._event_loop is None:
            self._event_loop = asyncio.get_running_loop()
        return self._event_loop

    @property
    def decode_errors(self) -> int:
        """Events received and dropped as malformed, every topic."""
        return sum(self.malformed.values())

    def _malformed(self, topic: str, kind: str) -> None:
        """Count it; log each kind of problem once per MALFORMED_LOG_SEC per topic, not once per event."""
        self.malformed[topic] += 1
        now = time.monotonic()
        if now - self._malformed_logged.get((topic, kind), -MALFORMED_LOG_SEC) >= MALFORMED_LOG_SEC:
            self._malformed_logged[(topic, kind)] = now
            log.warning("malformed %s event dropped: %s (more like it are counted in algo_bus_client_malformed_total, "
                        "logged at most every %.0fs)", topic, kind, MALFORMED_LOG_SEC)

    def _gap(self, event: Event, last: int) -> None:
        """seq jumped past last + 1: events were lost upstream. (A lower seq means the source
        restarted and counts from 1 again; nothing was lost.)"""
        missed = event.seq - last - 1
        self.gaps += missed
        if not is_market_data(event.type):  # conflation skips ticks by design
            log.warning("missed %d %s events from %s (seq %d -> %d)", missed, event.type, event.source, last, event.seq)


def malformed_kind(exc: Exception) -> str:
    """A short, low-cardinality description of why a body did not decode (the log's rate-limit key)."""
    if isinstance(exc, msgspec.ValidationError):
        return str(exc)  # e.g. "Expected `int`, got `bool` - at `$.seq`": one per field and type
    if isinstance(exc, UnicodeDecodeError):
        return "frame key is not UTF-8"
    return "body is not valid JSON"  # msgspec's own message carries a byte offset
