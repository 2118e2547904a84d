"""algo-heartbeat: publishes ``health.heartbeat``, watches every daemon's heartbeats, and
writes every ``control.*`` event to the journal (who paused what, with its TRACE_ID).

It subscribes to the heartbeats it publishes, so its health check proves the whole bus path
(client -> broker -> client) works. When no heartbeat has made the round trip for
``max_bus_outage_sec`` the daemon is unhealthy, stops feeding the watchdog, and systemd restarts it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Iterable, Sequence

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..runtime.config import FleetConfig, HeartbeatSection
from ..runtime.daemon import Daemon, serve
from ..runtime.envelope import HEALTH_HEARTBEAT, Event
from ..runtime.metrics import DaemonMetrics

log = logging.getLogger("algo.heartbeat")


class HeartbeatDaemon(Daemon):
    """Fleet liveness: heartbeats out, everyone's heartbeats in."""

    name = "heartbeat"

    def __init__(self, config: FleetConfig, metrics: DaemonMetrics) -> None:
        super().__init__(config, metrics)
        self.bus.subscribe(HEALTH_HEARTBEAT, self._on_heartbeat)
        self.bus.subscribe("control.*", self._on_control)
        self.started = time.monotonic()
        self.last_echo = self.started
        self.last_seen: dict[str, float] = {}  # source -> wall-clock time of its last heartbeat
        metrics.registry.register(FleetLivenessCollector(self))

    @property
    def section(self) -> HeartbeatSection:
        return self.config.daemons.heartbeat

    async def run(self) -> None:
        while not self.stopping.is_set():
            self.bus.publish(
                HEALTH_HEARTBEAT,
                {"daemon": self.name, "pid": os.getpid(), "uptime_sec": round(time.monotonic() - self.started, 3)},
            )
            try:
                await asyncio.wait_for(self.stopping.wait(), self.section.interval_sec)
            except asyncio.TimeoutError:
                pass

    def _on_heartbeat(self, event: Event) -> None:
        self.last_seen[event.source] = event.ts / 1e9
        if event.source == self.name:
            self.last_echo = time.monotonic()

    def _on_control(self, event: Event) -> None:
        fields = {"TRACE_ID": event.trace}
        for name in ("engine", "strategy", "symbol"):
            if isinstance(event.payload.get(name), str):
                fields[name.upper()] = event.payload[name]
        log.info("%s from %s: %s", event.type, event.source, event.payload, extra=fields)

    def health(self) -> str | None:
        silent = time.monotonic() - self.last_echo
        if silent > self.section.max_bus_outage_sec:
            return f"no heartbeat round trip through the bus for {silent:.0f}s"
        return None

    def status(self) -> str:
        state = "connected" if self.bus.connected else "bus unreachable"
        return f"{state}; heartbeat every {self.section.interval_sec:g}s; {len(self.last_seen)} daemons seen"


class FleetLivenessCollector(Collector):
    def __init__(self, daemon: HeartbeatDaemon) -> None:
        self.daemon = daemon

    def collect(self) -> Iterable[GaugeMetricFamily]:
        seen = GaugeMetricFamily(
            "algo_heartbeat_last_seen_timestamp_seconds", "When each daemon's last heartbeat was sent", labels=["source"]
        )
        for source, ts in sorted(self.daemon.last_seen.items()):
            seen.add_metric([source], ts)
        yield seen


def main(argv: Sequence[str] | None = None) -> None:
    serve(HeartbeatDaemon, argv)
