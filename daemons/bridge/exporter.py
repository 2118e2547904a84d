"""This host's events to Redis: XADD in pipelines, the order path held while Redis is unreachable.

Order-path events wait in a bounded outbox (``outbox_events``; the newest beyond it is dropped and
counted, as the bus client's outbox does) and leave it only once their XADD succeeded; a pipeline that
failed is sent again whole, so an entry may be in a stream twice, which importers drop by event id.
Market data is held as the newest tick per (topic, key) until the next pipeline: while Redis is slow or
down a tick is superseded, never queued (conflation, as the local bus does for a slow reader).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from itertools import islice

import redis.asyncio as aioredis

from ..runtime.config import BridgeSection
from ..runtime.redis_login import UNREACHABLE
from .link import Link
from .stats import BridgeStats
from .streams import MARKETDATA, family, fields, stream

PIPELINE = 64  # entries per XADD pipeline: batched (what makes a Python Redis client fast), small enough that the
# bridge reads its bus socket between pipelines and a burst waits in its outbox, not in the broker (a slow consumer)


class Exporter:
    def __init__(self, section: BridgeSection, host: str, link: Link, stats: BridgeStats) -> None:
        self.section = section
        self.host = host.encode()
        self.link = link
        self.stats = stats
        self.order: deque[tuple[str, dict[bytes, bytes]]] = deque()  # (stream, fields), oldest first
        self.marketdata: dict[tuple[bytes, bytes], dict[bytes, bytes]] = {}  # newest per (topic, key)
        self.wake = asyncio.Event()
        self.on_idle: Callable[[], None] = lambda: None  # every order-path event received is in Redis
        self._streams: dict[bytes, tuple[str, bool]] = {}  # topic -> its stream, and whether it is market data

    def offer(self, topic: bytes, key: bytes, body: bytes) -> None:
        """One event of this host's bus, body as published."""
        route = self._streams.get(topic)
        if route is None:
            fam = family(topic.decode())
            route = self._streams[topic] = (stream(self.section.stream_prefix, fam), fam == MARKETDATA)
        name, marketdata = route
        entry = fields(topic, key, self.host, body)
        if marketdata:
            before = len(self.marketdata)
            self.marketdata[(topic, key)] = entry
            if len(self.marketdata) == before:
                self.stats.dropped["conflated"] += 1
        elif len(self.order) >= self.section.outbox_events:
            self.stats.dropped["outbox_full"] += 1
            return
        else:
            self.order.append((name, entry))
        self.wake.set()

    @property
    def idle(self) -> bool:
        return not self.order

    async def run(self, redis: aioredis.Redis) -> None:
        while not self.link.closed:
            await self.wake.wait()
            self.wake.clear()
            while (self.order or self.marketdata) and not self.link.closed:
                asked = time.monotonic()
                try:
                    await self._flush(redis)
                except UNREACHABLE as exc:
                    await asyncio.sleep(self.link.failed(exc))
                    continue
                self.link.ok(asked)
            self.on_idle()

    async def flush(self, redis: aioredis.Redis) -> None:
        """Everything held, now (at stop); raises what an unreachable Redis raises."""
        while self.order or self.marketdata:
            await self._flush(redis)

    async def _flush(self, redis: aioredis.Redis) -> None:
        """One pipeline: the oldest order-path events, then held ticks; removed only once Redis took them
        (a tick is put back unless a newer one of its key came meanwhile)."""
        order = [self.order[i] for i in range(min(len(self.order), PIPELINE))]
        ticks = [(slot, self.marketdata.pop(slot)) for slot in list(islice(self.marketdata, PIPELINE - len(order)))]
        pipe = redis.pipeline(transaction=False)
        for name, entry in order:
            pipe.xadd(name, entry, maxlen=self.section.order_maxlen, approximate=True)  # type: ignore[arg-type]
        md_stream = stream(self.section.stream_prefix, MARKETDATA)
        for _, entry in ticks:
            pipe.xadd(md_stream, entry, maxlen=self.section.marketdata_maxlen, approximate=True)  # type: ignore[arg-type]
        started = time.perf_counter()
        try:
            await pipe.execute()
        except BaseException:
            for slot, entry in ticks:
                self.marketdata.setdefault(slot, entry)
            raise
        self.stats.redis_seconds.labels("xadd").observe(time.perf_counter() - started)
        for _ in order:
            self.order.popleft()
        self.stats.exported["order"] += len(order)
        self.stats.exported["marketdata"] += len(ticks)
