"""algo-gateway: the fleet's HTTP + WebSocket API for browsers and scripts, behind nginx.

A bus client like every daemon (heartbeats in, the order path streamed out, the kill switch
published), serving FastAPI through uvicorn on a Unix socket in the daemon's own event loop. The
runtime's lifecycle stays in charge: ``setup()`` binds the socket and starts the server, so READY=1
comes only once a connect would succeed; the watchdog is fed from the same loop that serves; SIGTERM
sends STOPPING=1, then ``drain()`` closes WebSockets (1012) and lets in-flight requests finish.
uvicorn's own signal handling and lifespan are not used (``Server.serve()`` would take SIGTERM over).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import uvicorn
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..bus.listen import bind_socket
from ..heartbeat.liveness import Liveness
from ..runtime.config import ConfigError, FleetConfig, GatewaySection, Problem
from ..runtime.daemon import Daemon, serve
from ..runtime.envelope import CONTROL_KILL_SWITCH, HEALTH_HEARTBEAT, Event
from ..runtime.heartbeat import BadHeartbeat, Heartbeat, expected_units, this_host
from ..runtime.metrics import DaemonMetrics
from .api import DaemonStatus, FleetStatus, KillSwitchState, create_app
from .auth import Auth
from .control import ControlPlane, Unavailable
from .ratelimit import FailureLimiter
from .strategies import NAME_PATTERN
from .stream import TOPICS, Stream
from .tokens import Principal, TokenError, TokenStore

log = logging.getLogger("algo.gateway")


class GatewayDaemon(Daemon):
    """HTTP + WebSocket API of the fleet on a Unix socket (docs/ARCHITECTURE.md, Gateway)."""

    name = "gateway"
    metrics_port = False  # /metrics is served on the API socket; nginx's loopback listener proxies it

    def __init__(self, config: FleetConfig, metrics: DaemonMetrics) -> None:
        super().__init__(config, metrics)
        self.stream = Stream(self.section.ring_events, self.section.ws_queue_events)
        self.liveness = Liveness(this_host(config), config.daemons.heartbeat.silent_after_sec)
        self.liveness.expect(expected_units(config), time.monotonic(), config.daemons.heartbeat.hosts)
        self.kill_switch: KillSwitchState | None = None
        self.malformed_heartbeats = 0
        for pattern in TOPICS:
            self.bus.subscribe(pattern, self._on_event)
        self.auth = Auth(None, FailureLimiter(self.section.failed_logins_burst, self.section.failed_logins_per_minute),
                         self.section.origins)  # tokens need the pepper: setup()
        self.app = create_app(self)
        self.control = ControlPlane(config.control_plane.database_url)
        self.auth.on_forbidden = self._record_forbidden
        self.server: uvicorn.Server | None = None
        metrics.registry.register(GatewayCollector(self))

    @classmethod
    def section_of(cls, config: FleetConfig) -> GatewaySection:
        return config.gateway

    @property
    def section(self) -> GatewaySection:
        return self.config.gateway

    @property
    def journal_dir(self) -> Path:
        return self.config.daemons.journal.directory

    async def setup(self) -> None:
        pepper = self.section.pepper
        if pepper is None:
            raise ConfigError("gateway", [Problem("gateway.pepper", "required: install the systemd credential "
                                                  "gateway_pepper (`algoctl gateway token add` creates one)")])
        try:
            self.auth.tokens = TokenStore(self.section.tokens, pepper.get_secret_value().encode())
        except TokenError as exc:
            raise ConfigError("gateway", [Problem("gateway.pepper", str(exc))]) from None
        sock = bind_socket(self.section.socket, self.config.fleet.group, "gateway.socket", "algo-gateway")
        config = uvicorn.Config(self.app, lifespan="off", log_config=None, access_log=False, server_header=False,
                                http="httptools", ws="websockets-sansio", ws_ping_interval=20.0,
                                timeout_graceful_shutdown=max(1, int(self.section.stop_timeout_sec) - 1))
        config.load()
        self.server = uvicorn.Server(config)
        self.server.lifespan = config.lifespan_class(config)
        await self.server.startup(sockets=[sock])

    async def run(self) -> None:
        try:  # after READY, and not required: the strategy routes answer 503 until the database is there
            await self.control.call(lambda store: None)
        except Unavailable:
            pass  # logged by the call
        await self.stopping.wait()

    async def drain(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
            await self.server.shutdown()
            self.section.socket.unlink(missing_ok=True)
        self.control.close()

    def record(self, principal: Principal, action: str, strategy: str | None, command_id: str | None,
               detail: dict[str, Any]) -> None:
        """An audit row in the control plane's database for a request that wrote nothing there (refused,
        or the kill switch). Blocking: call it from a worker thread. Journald has the request's line either
        way, so a database that cannot take the row is logged and counted, never a reason to fail the request."""
        try:
            self.control.run(lambda store: store.record(principal.name, action, strategy, command_id, detail))
        except Unavailable:
            log.warning("audit row not written to the control plane's database: %s %s", action, strategy or "",
                        extra={"ACTOR": principal.name, "STRATEGY": strategy})

    def _record_forbidden(self, principal: Principal, method: str, path: str, result: str) -> None:
        self.record(principal, "refused", _strategy_of(path), None, {"request": f"{method} {path}", "reason": result})

    def health(self) -> str | None:
        if self.server is not None and not all(s.is_serving() for s in self.server.servers):
            return "the API socket is no longer served"
        return None

    def status(self) -> str:
        return (f"api on {self.section.socket}; {len(self.stream.clients)} WebSocket clients, stream seq "
                f"{self.stream.seq}; bus {'connected' if self.bus.connected else 'DISCONNECTED'}")

    def _on_event(self, event: Event) -> None:
        if event.type == HEALTH_HEARTBEAT:
            try:
                self.liveness.heard(Heartbeat.parse(event.payload), time.monotonic(), event.ts / 1e9)
            except BadHeartbeat:
                self.malformed_heartbeats += 1  # algo-heartbeat logs these; not streamed either
                return
        elif event.type == CONTROL_KILL_SWITCH:
            engaged = bool(event.payload.get("engage", True))
            self.kill_switch = KillSwitchState(engaged=engaged, reason=str(event.payload.get("reason") or ""),
                                               by=event.source, trace=event.trace, ts=event.ts)
        self.stream.publish(event)

    def fleet_status(self) -> FleetStatus:
        self.liveness.check(time.monotonic())
        daemons = []
        for peer in sorted(self.liveness.peers.values(), key=lambda p: (p.host, p.unit)):
            beat = peer.last
            daemons.append(DaemonStatus(
                host=peer.host, unit=peer.unit, state=peer.state.value, expected=peer.expected,
                healthy=beat.healthy if beat else None, reason=beat.reason if beat else None,
                pid=beat.pid if beat else None, uptime_sec=beat.uptime_sec if beat else None,
                tick_age_sec=beat.tick_age_sec if beat else None, last_seen=peer.seen_at))
        return FleetStatus(host=self.liveness.host, bus_connected=self.bus.connected, daemons=daemons,
                           kill_switch=self.kill_switch, stream_seq=self.stream.seq)


def _strategy_of(path: str) -> str | None:
    """The strategy a request's path names (/api/v1/strategies/NAME/...), for its audit row."""
    parts = path.split("/")
    name = parts[4] if len(parts) > 4 and parts[3] == "strategies" else ""
    return name if re.fullmatch(NAME_PATTERN, name) else None


class GatewayCollector(Collector):
    """Plain counters read at scrape time, like the bus client's."""

    def __init__(self, gw: GatewayDaemon) -> None:
        self.gw = gw

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        gw = self.gw
        yield GaugeMetricFamily("algo_gateway_ws_clients", "WebSocket clients streaming events",
                                value=len(gw.stream.clients))
        yield CounterMetricFamily("algo_gateway_ws_messages", "Event messages written to WebSocket clients",
                                  value=gw.stream.sent)
        yield CounterMetricFamily("algo_gateway_stream_events", "Fleet events numbered into the stream",
                                  value=gw.stream.numbered)
        dropped = CounterMetricFamily("algo_gateway_ws_dropped", "WebSocket clients dropped as too slow, by reason",
                                      labels=["reason"])
        for reason in ("queue_full", "send_timeout"):
            dropped.add_metric([reason], gw.stream.dropped[reason])
        yield dropped
        refused = CounterMetricFamily("algo_gateway_auth_refused", "Requests refused, by reason", labels=["reason"])
        for reason in ("unauthenticated", "forbidden", "origin", "token_file"):
            refused.add_metric([reason], gw.auth.failures[reason])
        yield refused
        limited = CounterMetricFamily("algo_gateway_login_limited", "Requests refused (429) after too many failed "
                                      "logins, by the key over its limit", labels=["by"])
        for by in ("client", "token"):
            limited.add_metric([by], gw.auth.limited[by])
        yield limited
        yield CounterMetricFamily("algo_gateway_control_plane_unavailable", "Strategy and command requests refused "
                                  "(503): the control plane's database could not be used", value=gw.control.failures)


def main(argv: Sequence[str] | None = None) -> None:
    serve(GatewayDaemon, argv)

