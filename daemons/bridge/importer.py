"""Other hosts' events from Redis onto this host's bus, each once.

The order path is read with XREADGROUP in this host's consumer group (``group``, default the host
name; the consumer is the host name, stable across restarts). An entry is acknowledged (XACK) only
once this host's broker has the event, and "has" means: the broker routed it back to the bridge,
which subscribes to what it imports. The broker handles one connection's frames in order and hands
each to every subscriber at once, the sessions it keeps for departed peers included, so the echo
proves the event left the bridge's socket, was read and routed; not that every subscriber handled
it (that is the bus's own at-most-once within a host, with the journal's and execution's logs as
the durable record). Until then the entry stays pending: after an outage the bridge reads its own
pending entries again first, and a consumer silent past ``claim_timeout_sec`` (a dead bridge of the
same group) has its entries claimed (XAUTOCLAIM) and published by whoever claims them.

Dedup: an event id already put on this host's bus (echoed) or on its way (published, not echoed yet)
is never published again, within the last ``dedup_events`` ids; its entry is acknowledged or waits
for the echo. A claimed entry still on its way after a whole claim timeout is published again (its
echo was lost with a broker connection).

Market data is read with plain XREAD from where this bridge last read (from "now" at start): no group,
nothing to acknowledge, trimmed by MAXLEN. A read that returns a full batch is behind, and its ticks are
published as the newest per (topic, key), the rest counted as conflated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from ..runtime import wire
from ..runtime.config import BridgeSection
from ..runtime.redis_login import UNREACHABLE
from .link import Link, aw
from .recent import RecentIds
from .stats import BridgeStats
from .streams import MARKETDATA, Entry, Malformed, family, parse, stream

log = logging.getLogger("algo.bridge")

READ = 256  # entries per XREADGROUP / XAUTOCLAIM
READ_MARKETDATA = 1024  # ticks per XREAD; a full read means this bridge is behind
MALFORMED_LOG_SEC = 60.0

# Publishes (topic, key, body) on this host's bus; False when the bus client could not take it.
Publish = Callable[[bytes, bytes, bytes], bool]


class Importer:
    def __init__(self, section: BridgeSection, host: str, daemons: frozenset[str], link: Link, stats: BridgeStats,
                 publish: Publish) -> None:
        self.section = section
        self.host = host
        self.daemons = daemons  # this host's bus sources: another host's event named like one is refused
        self.group = section.group or host
        self.link = link
        self.stats = stats
        self.publish = publish
        self.patterns = section.imports
        families = sorted({family(p) for p in section.imports})
        self.streams = {stream(section.stream_prefix, f): f for f in families if f != MARKETDATA}
        self.md_stream = stream(section.stream_prefix, MARKETDATA) if MARKETDATA in families else None
        self.in_flight: dict[str, list[tuple[str, bytes]]] = {}  # event id -> its entries, published and not echoed
        self.seen = RecentIds(section.dedup_events)  # event ids this host's broker has routed
        self._acks: defaultdict[str, list[bytes]] = defaultdict(list)  # stream -> entry ids to XACK
        self._acking = False
        self.ack_wake = asyncio.Event()
        self.on_idle: Callable[[], None] = lambda: None  # every echo received so far is acknowledged in Redis
        self._wants: dict[str, bool] = {}
        self._malformed_logged: dict[str, float] = {}

    def wants(self, topic: str) -> bool:
        wanted = self._wants.get(topic)
        if wanted is None:
            wanted = self._wants[topic] = any(wire.matches(p, topic) for p in self.patterns)
        return wanted

    @property
    def idle(self) -> bool:
        return not self._acks and not self._acking

    def routed(self, event_id: str) -> None:
        """This host's broker routed an imported event (the bridge's own publish, or one the broker
        handed over again after a restart of the bridge): its entries can be acknowledged."""
        self.seen.add(event_id)
        entries = self.in_flight.pop(event_id, None)
        if entries:
            for name, entry_id in entries:
                self._acks[name].append(entry_id)
            self.ack_wake.set()

    # the order path

    async def run_order(self, redis: aioredis.Redis) -> None:
        """Own pending entries first (after start and after every outage), then new ones; claims on a timer."""
        created = False
        pending = True
        next_claim = 0.0
        while not self.link.closed:
            asked = time.monotonic()
            try:
                if not created:
                    created = await self._groups(redis, "$")
                if pending:
                    await self._own_pending(redis)
                    pending = False
                if time.monotonic() >= next_claim:
                    await self._claim(redis)
                    next_claim = time.monotonic() + self.section.claim_timeout_sec / 2
                if len(self.in_flight) >= self.section.dedup_events:  # this host's bus is not taking them
                    await asyncio.sleep(self.section.block_ms / 1000)
                    continue
                block = int(min(self.section.block_ms, max(1.0, (next_claim - time.monotonic()) * 1000)))
                reply = await aw(redis.xreadgroup(self.group, self.host, dict.fromkeys(self.streams, ">"),
                                                  count=READ, block=block))
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                log.error("redis lost the consumer group %s (restarted without persistence?): reading the streams "
                          "from their start", self.group)
                await self._groups(redis, "0")
                continue
            except UNREACHABLE as exc:
                pending = True
                await asyncio.sleep(self.link.failed(exc))
                continue
            self.link.ok(asked)
            for name, entries in _streams(reply):
                self._take(name, entries, claimed=False)

    async def _groups(self, redis: aioredis.Redis, start: str) -> bool:
        """This host's group on every order-path stream it imports; a new group starts at ``start``."""
        for name in self.streams:
            try:
                await aw(redis.xgroup_create(name, self.group, id=start, mkstream=True))
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        return True

    async def _own_pending(self, redis: aioredis.Redis) -> None:
        """Entries delivered to this consumer and not acknowledged: by a previous run, or whose reply was lost."""
        for name in self.streams:
            cursor: Any = "0"
            while True:
                reply = await aw(redis.xreadgroup(self.group, self.host, {name: cursor}, count=READ))
                entries = next((e for _, e in _streams(reply)), [])
                if not entries:
                    break
                self._take(name, entries, claimed=False)
                cursor = entries[-1][0]

    async def _claim(self, redis: aioredis.Redis) -> None:
        """Entries a consumer of this group has held unacknowledged past the claim timeout (it died)."""
        idle_ms = int(self.section.claim_timeout_sec * 1000)
        for name in self.streams:
            cursor: Any = "0-0"
            while True:
                reply = await aw(redis.xautoclaim(name, self.group, self.host, idle_ms, cursor, count=READ))
                cursor, entries = reply[0], reply[1]
                deleted = reply[2] if len(reply) > 2 else []
                self.stats.dropped["trimmed"] += len(deleted)  # claimed, but MAXLEN had removed them
                self.stats.claimed += len(entries)
                self._take(name, entries, claimed=True)
                if cursor in (b"0-0", "0-0"):
                    break

    def _take(self, name: str, entries: list[tuple[Any, Any]], *, claimed: bool) -> None:
        """Publish what this host has not seen yet; queue the acknowledgement of what needs none."""
        fam = self.streams[name]
        acks = self._acks[name]
        for entry_id, raw in entries:
            try:
                entry = parse(fam, raw)
            except Malformed as exc:
                self._malformed(name, exc.reason)
                acks.append(entry_id)
                continue
            if not self._foreign(entry):
                acks.append(entry_id)
                continue
            eid = entry.head.id
            if eid in self.seen:
                self.stats.redelivered += 1
                acks.append(entry_id)
                continue
            on_its_way = self.in_flight.get(eid)
            if on_its_way is not None:
                if (name, entry_id) not in on_its_way:
                    on_its_way.append((name, entry_id))  # the same event XADDed twice (an exporter's retry)
                if not claimed:
                    self.stats.redelivered += 1
                    continue
            if not self.publish(entry.topic.encode(), entry.key, entry.body):
                self.stats.dropped["local_outbox_full"] += 1  # stays pending: claimed again after the timeout
                continue
            if on_its_way is None:
                self.in_flight[eid] = [(name, entry_id)]
            self.stats.imported["order"] += 1
            self.stats.lag.observe(max(0.0, time.time() - entry.head.ts / 1e9))
        if acks:
            self.ack_wake.set()
        else:
            del self._acks[name]

    def _foreign(self, entry: Entry) -> bool:
        """Another host's event on a topic this host imports. Not: this host's own export, and not an event
        whose source is named like one of this host's daemons (sources must be unique across the hosts that
        exchange events: receivers track seqs per source, and the bridge exports by source name, so such an
        event would be sent out again); that is a configuration error, counted and logged."""
        if entry.host == self.host or not self.wants(entry.topic):
            return False
        if entry.head.source in self.daemons:
            self.stats.dropped["name_clash"] += 1
            self._rate_limited("name_clash", f"an event of {entry.head.source!r} from host {entry.host} was not "
                               f"imported: {entry.head.source!r} is also a daemon of this host (daemons.bridge.daemons); "
                               "daemon names must be unique across hosts")
            return False
        return True

    def _malformed(self, name: str, reason: str) -> None:
        self.stats.dropped["trimmed" if reason == "trimmed" else "malformed"] += 1
        self._rate_limited(reason, f"skipped a stream entry of {name}: {reason}")

    def _rate_limited(self, kind: str, message: str) -> None:
        """One warning per kind of problem per minute; the rest are counted in algo_bridge_dropped_total."""
        now = time.monotonic()
        if now - self._malformed_logged.get(kind, -MALFORMED_LOG_SEC) >= MALFORMED_LOG_SEC:
            self._malformed_logged[kind] = now
            log.warning("%s (more like it are counted in algo_bridge_dropped_total, logged at most every %.0fs)",
                        message, MALFORMED_LOG_SEC)

    async def run_acks(self, redis: aioredis.Redis) -> None:
        """XACK what this host has (or does not import), in one pipeline per wake-up."""
        while not self.link.closed:
            await self.ack_wake.wait()
            self.ack_wake.clear()
            while self._acks and not self.link.closed:
                batch, self._acks = self._acks, defaultdict(list)
                self._acking = True
                pipe = redis.pipeline(transaction=False)
                for name, ids in batch.items():
                    pipe.xack(name, self.group, *ids)
                asked, started = time.monotonic(), time.perf_counter()
                try:
                    await pipe.execute()
                except UNREACHABLE as exc:
                    for name, ids in batch.items():
                        self._acks[name][:0] = ids
                    self._acking = False
                    await asyncio.sleep(self.link.failed(exc))
                    continue
                self._acking = False
                self.link.ok(asked)
                self.stats.redis_seconds.labels("xack").observe(time.perf_counter() - started)
            self.on_idle()

    # market data

    async def run_marketdata(self, redis: aioredis.Redis) -> None:
        assert self.md_stream is not None
        last: Any = "$"
        while not self.link.closed:
            asked = time.monotonic()
            try:
                reply = await aw(redis.xread({self.md_stream: last}, count=READ_MARKETDATA, block=self.section.block_ms))
            except UNREACHABLE as exc:
                await asyncio.sleep(self.link.failed(exc))
                continue
            self.link.ok(asked)
            for _, entries in _streams(reply):
                if entries:
                    last = entries[-1][0]
                    self._ticks(entries)

    def _ticks(self, entries: list[tuple[Any, Any]]) -> None:
        behind = len(entries) >= READ_MARKETDATA
        newest: dict[tuple[str, bytes], Entry] = {}
        for _, raw in entries:
            try:
                entry = parse(MARKETDATA, raw)
            except Malformed as exc:
                self._malformed(MARKETDATA, exc.reason)
                continue
            if not self._foreign(entry):
                continue
            if behind:
                self.stats.dropped["conflated"] += (entry.topic, entry.key) in newest
                newest[(entry.topic, entry.key)] = entry
            elif self.publish(entry.topic.encode(), entry.key, entry.body):
                self.stats.imported["marketdata"] += 1
            else:
                self.stats.dropped["local_outbox_full"] += 1
        for entry in newest.values():
            if self.publish(entry.topic.encode(), entry.key, entry.body):
                self.stats.imported["marketdata"] += 1
            else:
                self.stats.dropped["local_outbox_full"] += 1
        last = entries[-1][1]
        if last:
            try:
                self.stats.lag.observe(max(0.0, time.time() - parse(MARKETDATA, last).head.ts / 1e9))
            except Malformed:
                pass


def _streams(reply: Any) -> list[tuple[str, list[tuple[Any, Any]]]]:
    """XREAD / XREADGROUP replies as (stream name, entries), in RESP2 (a list) or RESP3 (a dict) shape."""
    if not reply:
        return []
    pairs = reply.items() if isinstance(reply, dict) else reply
    out = []
    for name, entries in pairs:
        if isinstance(entries, list) and len(entries) == 1 and isinstance(entries[0], list):
            entries = entries[0]  # RESP3: {name: [entries]}
        out.append((name.decode() if isinstance(name, bytes) else name, entries or []))
    return out
