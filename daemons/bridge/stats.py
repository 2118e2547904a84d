"""The bridge's counters (plain numbers on the hot path, read at scrape time) and its two histograms."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .main import Bridge

LANES = ("order", "marketdata")
# Why an event did not cross: the order-path outbox was full while Redis was unreachable; a stream entry
# that is not the bridge's format; an entry MAXLEN trimmed before this host read it; this host's bus
# client could not take it; a tick superseded by a newer one of its key (market data only); another host's
# event whose source is named like a daemon of this host (a configuration error).
DROP_REASONS = ("outbox_full", "malformed", "trimmed", "local_outbox_full", "conflated", "name_clash")


class BridgeStats:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.exported: Counter[str] = Counter()
        self.imported: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.redelivered = 0  # entries Redis handed over again whose event this host's bus already has
        self.claimed = 0  # entries taken over from a consumer idle past claim_timeout_sec (XAUTOCLAIM)
        self.redis_seconds = Histogram(
            "algo_bridge_redis_seconds", "Round trip of the bridge's Redis writes (XADD pipelines, XACKs)", ["op"],
            buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1, 0.5, 2.0), registry=registry,
        )
        self.lag = Histogram(
            "algo_bridge_lag_seconds", "From an imported event's publish time on its host to its publish on this "
            "host's bus (includes the hosts' clock offset)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0), registry=registry,
        )


class BridgeCollector(Collector):
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        b = self.bridge
        s = b.stats
        for name, help_, counts in (("algo_bridge_exported", "Events relayed from this host's bus to Redis", s.exported),
                                    ("algo_bridge_imported", "Events relayed from Redis to this host's bus", s.imported)):
            family = CounterMetricFamily(name, help_, labels=["lane"])
            for lane in LANES:
                family.add_metric([lane], counts[lane])
            yield family
        dropped = CounterMetricFamily("algo_bridge_dropped", "Events that did not cross, by reason", labels=["reason"])
        for reason in DROP_REASONS:
            dropped.add_metric([reason], s.dropped[reason])
        yield dropped
        yield CounterMetricFamily("algo_bridge_redelivered", "Stream entries delivered again and not published "
                                  "twice (dedup by event id)", value=s.redelivered)
        yield CounterMetricFamily("algo_bridge_claimed", "Pending entries claimed from a consumer idle past the "
                                  "claim timeout", value=s.claimed)
        yield GaugeMetricFamily("algo_bridge_redis_up", "1 while the last Redis call succeeded", value=int(b.link.up))
        yield CounterMetricFamily("algo_bridge_redis_outages", "Times Redis became unreachable", value=b.link.outages)
        yield GaugeMetricFamily("algo_bridge_outbox_events", "Order-path events waiting for Redis",
                                value=len(b.exporter.order))
        yield GaugeMetricFamily("algo_bridge_in_flight", "Imported events published on this host's bus and not yet "
                                "seen routed back by its broker (their entries not yet acknowledged)",
                                value=len(b.importer.in_flight))
