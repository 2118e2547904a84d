"""algo-bridge: one per host of a multi-host fleet, relaying chosen topics between this host's bus and
Redis Streams (docs/ARCHITECTURE.md, Bridge). Every daemon keeps its local Unix-socket bus; only the
topics the config names cross hosts.

Out: events on ``exports`` topics whose ``source`` is one of this host's ``daemons`` (so an imported
event is never exported again: no echo loops), body untouched. In: entries of the streams of ``imports``
not exported by this host, published on this host's bus with the same body (id, source, seq, trace).

The bridge reads raw frames: it takes over its bus transport's batches, so bodies are forwarded as
published and only the envelope's id, source, type and ts are decoded. It asks the broker for acks
(``"acks": true``) and acknowledges once everything it received is in Redis (exports XADDed, imports'
echoes XACKed): a bridge killed in between gets those frames again from the broker when it comes back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Sequence
from typing import Any, cast

import msgspec
import redis.asyncio as aioredis

from ..runtime import wire
from ..runtime.config import BridgeSection, FleetConfig
from ..runtime.daemon import Daemon, serve
from ..runtime.envelope import MARKET_DATA_MARKS, Event
from ..runtime.heartbeat import PER_HOST, bus_source, this_host
from ..runtime.metrics import DaemonMetrics
from ..runtime.redis_login import UNREACHABLE, connect, password
from .exporter import Exporter
from .importer import Importer
from .link import Link
from .stats import BridgeCollector, BridgeStats
from .streams import MARKETDATA, decode_head, family

log = logging.getLogger("algo.bridge")

MALFORMED_LOG_SEC = 60.0


def _unused(event: Event) -> None:
    """Subscriptions are made through the bus client (it re-sends them on reconnect); frames never reach here."""


class Bridge(Daemon):
    """Relays chosen topics between this host's bus and Redis Streams."""

    name = "bridge"
    bus_acks = True

    def __init__(self, config: FleetConfig, metrics: DaemonMetrics) -> None:
        super().__init__(config, metrics)
        section = self._section = cast(BridgeSection, self.section_of(config))
        self.host = section.host or this_host(config)
        # Its daemons by bus source ("execution@a" under a lease); with [fleet] host set, this host's algo-heartbeat and
        # algo-bridge ("heartbeat@a") are its daemons too.
        self.daemons = frozenset(bus_source(name, config) for name in section.daemons) | {
            bus_source(name, config) for name in PER_HOST if config.fleet.host}
        self.stats = BridgeStats(metrics.registry)
        self.link = Link(section)
        self.exporter = Exporter(section, self.host, self.link, self.stats)
        self.importer = Importer(section, self.host, self.daemons, self.link, self.stats, self._publish)
        self.exporter.on_idle = self.importer.on_idle = self._acknowledge
        # What it exports, and the order path it imports (to see it routed back); imported ticks need no echo.
        for pattern in dict.fromkeys(section.exports + [p for p in section.imports if family(p) != MARKETDATA]):
            self.bus.subscribe(pattern, _unused)
        self.bus.transport.on_batch = self._on_local
        self._exports: dict[bytes, bool] = {}
        self.malformed = 0
        self._malformed_logged = -MALFORMED_LOG_SEC
        self.redis: aioredis.Redis | None = None
        metrics.registry.register(BridgeCollector(self))

    @property
    def section(self) -> BridgeSection:
        """The section the bridge started with: its streams, groups and patterns change only with a restart."""
        return self._section

    async def reload(self, config: FleetConfig) -> None:
        if config.daemons.bridge != self._section:
            log.warning("[daemons.bridge] changed: the bridge applies it at its next start (systemctl restart algo-bridge)")
        self.config = config

    async def setup(self) -> None:
        self.redis = connect(self.section, password(self.section, "daemons.bridge.password_credential",
                                                    "algo-bridge.service"))

    async def run(self) -> None:
        assert self.redis is not None
        jobs: list[Coroutine[Any, Any, None]] = [self.exporter.run(self.redis), self.importer.run_acks(self.redis)]
        if self.importer.streams:
            jobs.append(self.importer.run_order(self.redis))
        if self.importer.md_stream:
            jobs.append(self.importer.run_marketdata(self.redis))
        tasks = [asyncio.create_task(job) for job in jobs]
        stop = asyncio.create_task(self.stopping.wait())
        try:
            done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop:
                    task.result()  # a bug in a loop: the daemon fails and systemd restarts it
        finally:
            self.link.closed = True
            for task in [*tasks, stop]:
                task.cancel()
            await asyncio.wait([*tasks, stop])  # each within its current Redis call (Link.closed)

    async def drain(self) -> None:
        """What this host published for other hosts goes to Redis before the bridge stops, if Redis is there."""
        if self.redis is None:
            return
        if self.exporter.order:
            log.info("stopping: %d order-path events still go to redis", len(self.exporter.order))
            try:
                await self.exporter.flush(self.redis)
            except UNREACHABLE as exc:
                log.warning("stopping with %d order-path events redis did not take (%s)", len(self.exporter.order), exc)
        await self.redis.aclose()

    def status(self) -> str:
        s = self.stats
        return (f"redis {'up' if self.link.up else 'DOWN'}; exported {sum(s.exported.values())}, imported "
                f"{sum(s.imported.values())}, outbox {len(self.exporter.order)}, in flight {len(self.importer.in_flight)}")

    # this host's bus

    def _publish(self, topic: bytes, key: bytes, body: bytes) -> bool:
        """An imported event onto this host's bus, the frame built around the body as it was published."""
        return self.bus.transport.send(wire.encode(wire.PUBLISH, topic, body, key))

    def _on_local(self, data: bytes, spans: list[wire.Span]) -> None:
        """A read from this host's broker: this host's events go out, imported ones' echoes are acknowledged."""
        daemons, importer = self.daemons, self.importer
        for _, start, t1, k1, stop in spans:
            topic = data[start + wire.HEADER_SIZE : t1]
            try:
                head = decode_head(memoryview(data)[k1:stop])
            except msgspec.DecodeError:
                self._malformed(topic)
                continue
            if head.source in daemons:
                if self._exported(topic):
                    self.exporter.offer(topic, data[t1:k1], data[k1:stop])
            elif importer.wants(head.type) and not topic.startswith(MARKET_DATA_MARKS):
                importer.routed(head.id)

    def _exported(self, topic: bytes) -> bool:
        exported = self._exports.get(topic)
        if exported is None:
            name = topic.decode()
            exported = self._exports[topic] = any(wire.matches(p, name) for p in self.section.exports)
        return exported

    def _acknowledge(self) -> None:
        """Everything received from the broker is in Redis: it need not keep it for a replay."""
        if self.exporter.idle and self.importer.idle:
            self.bus.acknowledge()

    def _malformed(self, topic: bytes) -> None:
        self.malformed += 1
        self.stats.dropped["malformed"] += 1
        now = time.monotonic()
        if now - self._malformed_logged >= MALFORMED_LOG_SEC:
            self._malformed_logged = now
            log.warning("malformed %s event on this host's bus not relayed (counted in algo_bridge_dropped_total)",
                        topic.decode(errors="replace"))


def main(argv: Sequence[str] | None = None) -> None:
    serve(Bridge, argv)
