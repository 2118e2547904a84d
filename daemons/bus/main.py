"""algo-bus: the fleet's event broker on /run/algo/bus.sock (socket-activated by algo-bus.socket)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..runtime.config import FleetConfig
from ..runtime.daemon import Daemon, serve
from ..runtime.metrics import DaemonMetrics
from .broker import Broker
from .listen import bind_socket, systemd_socket

log = logging.getLogger("algo.bus")


class BusDaemon(Daemon):
    """The event broker: publish/subscribe by topic over a Unix socket."""

    name = "bus"
    uses_bus = False  # it is the bus

    def __init__(self, config: FleetConfig, metrics: DaemonMetrics) -> None:
        super().__init__(config, metrics)
        self.broker = Broker(
            max_frame=config.bus.max_frame_bytes,
            buffer_limit=config.bus.subscriber_buffer_bytes,
            group=config.fleet.group,
        )
        metrics.registry.register(BrokerCollector(self.broker))
        self._rate_mark = (time.monotonic(), 0)
        self.activated = False

    async def setup(self) -> None:
        sock = systemd_socket()
        self.activated = sock is not None
        if sock is None:
            sock = bind_socket(self.config.bus.socket, self.config.fleet.group)
        await self.broker.serve(sock)
        log.info("bus listening on %s (%s)", self.config.bus.socket, "socket-activated" if self.activated else "own socket")

    async def run(self) -> None:
        await self.stopping.wait()

    async def drain(self) -> None:
        await self.broker.close()

    def health(self) -> str | None:
        return None if self.broker.serving else "listening socket closed"

    def status(self) -> str:
        now = time.monotonic()
        total = sum(self.broker.stats.published.values())
        then, before = self._rate_mark
        self._rate_mark = (now, total)
        rate = (total - before) / (now - then) if now > then else 0.0
        dropped = sum(self.broker.stats.dropped.values())
        return f"{len(self.broker.peers)} peers, {self.broker.subscriptions} subscriptions, {rate:.0f} msg/s, {dropped} dropped"


class BrokerCollector(Collector):
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        b, s = self.broker, self.broker.stats
        yield GaugeMetricFamily("algo_bus_peers", "Connected bus clients", value=len(b.peers))
        yield GaugeMetricFamily("algo_bus_subscriptions", "Active subscription patterns", value=b.subscriptions)
        yield GaugeMetricFamily("algo_bus_queue_bytes", "Bytes queued to subscribers", value=b.queued_bytes)
        pub = CounterMetricFamily("algo_bus_published", "Events published, by topic", labels=["topic"])
        for topic, n in sorted(s.published.items()):
            pub.add_metric([topic.decode()], n)
        yield pub
        yield CounterMetricFamily("algo_bus_delivered", "Event deliveries to subscribers", value=s.delivered)
        yield CounterMetricFamily("algo_bus_filtered", "Market-data deliveries skipped: not in the subscriber's key filter",
                                  value=s.filtered)
        dropped = CounterMetricFamily("algo_bus_dropped", "Deliveries dropped, by reason", labels=["reason"])
        for reason in ("conflated", "slow_consumer", "disconnected"):
            dropped.add_metric([reason], s.dropped[reason])
        yield dropped
        errors = CounterMetricFamily("algo_bus_protocol_errors", "Bad frames received, by reason", labels=["reason"])
        for reason in ("malformed", "oversized", "truncated"):
            errors.add_metric([reason], s.protocol_errors[reason])
        yield errors
        disc = CounterMetricFamily("algo_bus_disconnects", "Peers the broker disconnected, by reason", labels=["reason"])
        for reason in ("protocol_error", "slow_consumer"):
            disc.add_metric([reason], s.disconnects[reason])
        yield disc
        yield CounterMetricFamily("algo_bus_peers_rejected", "Connections refused by SO_PEERCRED", value=s.rejected_peers)
        yield CounterMetricFamily("algo_bus_peers_accepted", "Connections accepted", value=s.accepted_peers)


def main(argv: Sequence[str] | None = None) -> None:
    serve(BusDaemon, argv)
