"""Each daemon's Prometheus endpoint: one registry per daemon, every name prefixed ``algo_``."""

from __future__ import annotations

import platform
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from .. import __version__
from . import disk_sync

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from .client import BusClient


class DaemonMetrics:
    """What every daemon exports; daemons add their own metrics to ``registry``."""

    def __init__(self, daemon: str) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series double the catalogue and nobody queries them
        self.daemon = daemon
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(namespace="algo", registry=self.registry)
        info = Gauge(
            "algo_build_info", "Build of the running daemon (always 1)", ["daemon", "version", "python"],
            registry=self.registry,
        )
        info.labels(daemon, __version__, platform.python_version()).set(1)
        self.healthy = Gauge("algo_daemon_healthy", "1 while the daemon's health check passes", registry=self.registry)
        self.watchdog_pings = Counter(
            "algo_watchdog_pings", "WATCHDOG=1 notifications sent to systemd", registry=self.registry
        )
        self.reloads = Counter("algo_config_reloads", "Config reloads by result", ["result"], registry=self.registry)
        self.reload_refused = Gauge(
            "algo_config_reload_refused", "1 while the config file is one this daemon refused at its last reload "
            "(it runs the config it had; a restart would exit 78)", registry=self.registry)
        self.loop_lag = Histogram(
            "algo_event_loop_lag_seconds", "How late the watchdog tick ran: event-loop responsiveness",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5), registry=self.registry,
        )
        self.registry.register(disk_sync.SYNC_SECONDS)  # the process's syncs, whichever module made them
        self._server: WSGIServer | None = None

    def serve(self, bind: str, port: int) -> None:
        self._server, _ = start_http_server(port, addr=bind, registry=self.registry)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class BusClientCollector(Collector):
    """Reads the client's plain counters at scrape time, keeping the publish path free of locks."""

    def __init__(self, client: BusClient) -> None:
        self.client = client

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        c, t = self.client, self.client.transport
        yield GaugeMetricFamily("algo_bus_client_connected", "1 while connected to the bus", value=int(c.connected))
        pub = CounterMetricFamily("algo_bus_client_published", "Events published by topic", labels=["topic"])
        for topic, n in sorted(c.published.items()):
            pub.add_metric([topic], n)
        yield pub
        yield CounterMetricFamily("algo_bus_client_received", "Events received", value=c.received)
        dropped = CounterMetricFamily("algo_bus_client_dropped", "Events this client lost, by reason", labels=["reason"])
        dropped.add_metric(["outbox_full"], t.dropped)
        dropped.add_metric(["undecodable"], c.decode_errors)
        dropped.add_metric(["conflated"], c.conflated)
        yield dropped
        malformed = CounterMetricFamily("algo_bus_client_malformed", "Malformed events received and skipped, by topic",
                                        labels=["topic"])
        for topic, n in sorted(c.malformed.items()):
            malformed.add_metric([topic], n)
        yield malformed
        yield CounterMetricFamily("algo_bus_client_gaps", "Events missed upstream (sequence gaps)", value=c.gaps)
        yield CounterMetricFamily("algo_bus_client_reconnects", "Reconnects to the broker", value=t.reconnects)
        yield CounterMetricFamily("algo_bus_client_handler_errors", "Subscriber handlers that raised", value=c.handler_errors)
        yield GaugeMetricFamily("algo_bus_client_queue_bytes", "Bytes waiting to reach the broker", value=t.queued_bytes)
        yield HistogramMetricFamily("algo_bus_client_lag_seconds", "Publish-to-handler delay of received events "
                                    "(one in 64 sampled)", buckets=c.lag.buckets(), sum_value=c.lag.total)
