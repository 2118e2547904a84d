"""algo-heartbeat: watches every daemon's ``health.heartbeat`` (each daemon's runner publishes one,
see runtime/heartbeat.py for the payload), this host's and, through the bridges, the other hosts' the config
names (``[daemons.heartbeat] hosts``), flags a daemon silent for longer than ``silent_after_sec`` and a
host silent when all its daemons are, and writes every ``control.*`` event to the journal (who paused what, with its TRACE_ID).

It receives its own heartbeats too, so its health check proves the whole bus path
(client -> broker -> client) works. When no heartbeat has made the round trip for
``max_bus_outage_sec`` the daemon is unhealthy, stops feeding the watchdog, and systemd restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..runtime.config import FleetConfig, HeartbeatSection
from ..runtime.daemon import Daemon, serve
from ..runtime.envelope import HEALTH_HEARTBEAT, Event
from ..runtime.heartbeat import BadHeartbeat, Heartbeat, expected_units, this_host
from ..runtime.metrics import DaemonMetrics
from .liveness import Change, Liveness, State

log = logging.getLogger("algo.heartbeat")


class HeartbeatDaemon(Daemon):
    """Fleet liveness: everyone's heartbeats in, the silent ones flagged."""

    name = "heartbeat"

    def __init__(self, config: FleetConfig, metrics: DaemonMetrics) -> None:
        super().__init__(config, metrics)
        self.bus.subscribe(HEALTH_HEARTBEAT, self._on_heartbeat)
        self.bus.subscribe("control.*", self._on_control)
        self.last_echo = time.monotonic()
        self.liveness = Liveness(this_host(config), self.section.silent_after_sec)
        self.liveness.expect(expected_units(config), time.monotonic(), self.section.hosts)
        self.silent_hosts: set[str] = set()
        self.malformed = 0
        self._refused: set[str] = set()  # sources whose malformed heartbeats were logged (once each)
        metrics.registry.register(FleetLivenessCollector(self))

    @property
    def section(self) -> HeartbeatSection:
        return self.config.daemons.heartbeat

    async def run(self) -> None:
        blind = False
        while not self.stopping.is_set():
            now = time.monotonic()
            if now - self.last_echo > self.section.silent_after_sec:
                blind = True  # our own heartbeats do not come back: the bus is down, not the fleet
            elif blind:
                blind = False
                self.liveness.pardon(now)
            else:
                for change in self.liveness.check(now):
                    self._report(change)
                self._report_hosts()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.section.interval_sec)

    async def reload(self, config: FleetConfig) -> None:
        self.config = config
        self.liveness.silent_after = self.section.silent_after_sec
        self.liveness.expect(expected_units(config), time.monotonic(), self.section.hosts)

    def _on_heartbeat(self, event: Event) -> None:
        if event.source == self.bus.source:
            self.last_echo = time.monotonic()
        try:
            beat = Heartbeat.parse(event.payload)
        except BadHeartbeat as exc:
            self.malformed += 1
            if event.source not in self._refused:  # once per source: a broken sender beats every second
                self._refused.add(event.source)
                log.warning("malformed heartbeat from %s ignored: %s", event.source, exc)
            return
        change = self.liveness.heard(beat, time.monotonic(), time.time())
        if change is not None:
            self._report(change)
            self._report_hosts()

    def _report(self, change: Change) -> None:
        peer = change.peer
        fields = {"DAEMON_UNIT": peer.unit, "DAEMON_HOST": peer.host}
        if peer.state is State.SILENT and change.before is State.WAITING:
            log.error("%s: no heartbeat since algo-heartbeat started %.0fs ago (expected by the config)",
                      peer.name, change.quiet_for, extra=fields)
        elif peer.state is State.SILENT:
            log.error("%s silent: no heartbeat for %.1fs (limit %gs)", peer.name, change.quiet_for,
                      self.section.silent_after_sec, extra=fields)
        elif change.before is State.SILENT:
            log.info("%s heartbeats again after %.1fs", peer.name, change.quiet_for, extra=fields)

    def _report_hosts(self) -> None:
        """A host going silent (every daemon watched on it) is one err line, coming back one info line."""
        silent = {host for host, quiet in self.liveness.hosts().items() if quiet}
        for host in sorted(silent - self.silent_hosts):
            log.error("host %s silent: none of its daemons' heartbeats arrive (the host is down, or cut off from "
                      "this one: its bridge, this host's bridge, or Redis)", host, extra={"DAEMON_HOST": host})
        for host in sorted(self.silent_hosts & set(self.liveness.hosts()) - silent):
            log.info("host %s heartbeats again", host, extra={"DAEMON_HOST": host})
        self.silent_hosts = silent

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
        peers = self.liveness.peers.values()
        alive = sum(1 for p in peers if p.state is State.ALIVE)
        hosts = sorted(host for host, quiet in self.liveness.hosts().items() if quiet)
        silent = ", ".join([f"host {host}" for host in hosts] + sorted(
            p.name if p.host != self.liveness.host else p.unit for p in self.liveness.silent() if p.host not in hosts))
        unhealthy = sorted(p.unit for p in peers if p.state is State.ALIVE and p.last and not p.last.healthy)
        return (f"{state}; heartbeat every {self.section.interval_sec:g}s; {alive} daemons alive"
                + (f", SILENT: {silent}" if silent else "")
                + (f", unhealthy: {', '.join(unhealthy)}" if unhealthy else ""))


class FleetLivenessCollector(Collector):
    def __init__(self, daemon: HeartbeatDaemon) -> None:
        self.daemon = daemon

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        labels = ["host", "unit"]
        seen = GaugeMetricFamily("algo_heartbeat_last_seen_timestamp_seconds",
                                 "When each daemon's last heartbeat arrived (this host's clock)", labels=labels)
        silent = GaugeMetricFamily("algo_heartbeat_silent", "1 while a daemon has sent no heartbeat for longer "
                                   "than silent_after_sec (or none since algo-heartbeat started)", labels=labels)
        healthy = GaugeMetricFamily("algo_heartbeat_daemon_healthy", "The health each daemon's last heartbeat "
                                    "reported (1 healthy)", labels=labels)
        lag = GaugeMetricFamily("algo_heartbeat_loop_lag_seconds", "The worst event-loop lag each daemon's last "
                                "heartbeat reported", labels=labels)
        tick_age = GaugeMetricFamily("algo_heartbeat_tick_age_seconds", "Seconds since the last tick, as each "
                                     "tick-consuming daemon's last heartbeat reported", labels=labels)
        for (host, unit), peer in sorted(self.daemon.liveness.peers.items()):
            silent.add_metric([host, unit], int(peer.state is State.SILENT))
            beat = peer.last
            if beat is None or peer.seen_at is None:
                continue
            seen.add_metric([host, unit], peer.seen_at)
            healthy.add_metric([host, unit], int(beat.healthy))
            lag.add_metric([host, unit], beat.loop_lag_sec)
            if beat.tick_age_sec is not None:
                tick_age.add_metric([host, unit], beat.tick_age_sec)
        hosts = GaugeMetricFamily("algo_heartbeat_host_silent", "1 while every daemon watched on a host is silent "
                                  "(the host is down or cut off from this one)", labels=["host"])
        for host, quiet in sorted(self.daemon.liveness.hosts().items()):
            hosts.add_metric([host], int(quiet))
        yield from (seen, silent, healthy, lag, tick_age, hosts)
        yield CounterMetricFamily("algo_heartbeat_malformed", "Heartbeats refused for breaking the payload contract",
                                  value=self.daemon.malformed)


def main(argv: Sequence[str] | None = None) -> None:
    serve(HeartbeatDaemon, argv)
