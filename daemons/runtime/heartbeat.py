"""The ``health.heartbeat`` payload: a contract between every daemon and whoever watches the fleet.

Every long-running daemon publishes one every ``[daemons.heartbeat] interval_sec`` (the runner does
it, see daemon.py); algo-heartbeat reads them, on its own host and, through the bridges, other hosts',
so the payload is versioned and validated, and a malformed one is
refused with the reason instead of being half-read. docs/ARCHITECTURE.md documents every field.
"""

from __future__ import annotations

import math
import socket
from typing import Any, NamedTuple

from .config import FleetConfig, local_daemons

VERSION = 1


class BadHeartbeat(ValueError):
    """A payload that breaks the contract; the message names the field."""


class Heartbeat(NamedTuple):
    """One daemon's liveness and health as it sees them itself."""

    unit: str  # the systemd unit without ".service": algo-fno, algo-strategy@ema-nifty
    host: str  # the sender's host name: (host, unit) identifies a daemon across hosts
    pid: int
    uptime_sec: float
    interval_sec: float  # when the next one is due
    healthy: bool  # the daemon's health check, as fed to the systemd watchdog
    reason: str | None  # why not healthy; None when healthy
    loop_lag_sec: float  # the worst event-loop lag since the previous heartbeat
    tick_age_sec: float | None  # seconds since the last market tick it handled; None: none yet, or no ticks

    def payload(self) -> dict[str, Any]:
        return {"v": VERSION, **self._asdict()}

    @classmethod
    def parse(cls, payload: dict[str, Any]) -> Heartbeat:
        """The heartbeat in ``payload``; BadHeartbeat names the first field that breaks the contract."""
        if payload.get("v") != VERSION:
            raise BadHeartbeat(f"v: expected {VERSION}, got {payload.get('v')!r}")
        for name in ("unit", "host"):
            if not isinstance(payload.get(name), str) or not payload[name]:
                raise BadHeartbeat(f"{name}: expected a non-empty string, got {payload.get(name)!r}")
        if not isinstance(payload.get("pid"), int) or isinstance(payload["pid"], bool):
            raise BadHeartbeat(f"pid: expected an integer, got {payload.get('pid')!r}")
        if not isinstance(payload.get("healthy"), bool):
            raise BadHeartbeat(f"healthy: expected true or false, got {payload.get('healthy')!r}")
        reason = payload.get("reason")
        if not (reason is None or isinstance(reason, str)) or (reason is None) != payload["healthy"]:
            raise BadHeartbeat(f"reason: expected a string exactly when healthy is false, got {reason!r}")
        numbers = {name: _seconds(payload, name) for name in ("uptime_sec", "interval_sec", "loop_lag_sec")}
        tick_age = None if payload.get("tick_age_sec") is None else _seconds(payload, "tick_age_sec")
        return cls(payload["unit"], payload["host"], payload["pid"], numbers["uptime_sec"], numbers["interval_sec"],
                   payload["healthy"], reason, numbers["loop_lag_sec"], tick_age)


def _seconds(payload: dict[str, Any], name: str) -> float:
    value = payload.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise BadHeartbeat(f"{name}: expected a non-negative number, got {value!r}")
    return float(value)


def this_host(config: FleetConfig) -> str:
    """This host's name: ``[fleet] host``, else the machine's hostname."""
    return config.fleet.host or socket.gethostname()


# The daemons every host of a multi-host fleet runs: their bus sources carry [fleet] host to stay unique.
PER_HOST = ("heartbeat", "bridge")


def bus_source(name: str, config: FleetConfig) -> str:
    """The bus source of daemon ``name``: sources must be unique across the hosts that exchange events (receivers
    track seqs per source; bridges export, and refuse imports, by source), so one that every host runs is
    qualified by ``[fleet] host`` ("heartbeat@a"), and so is algo-execution under a lease: the active and its
    standby run on two hosts, and the one that takes over must reach risk and the journal on the former
    active's host, whose bridge would refuse "execution" as its own. Without a host name (one host) it is the
    plain name."""
    per_host = name in PER_HOST or (name == "execution" and config.daemons.execution.lease is not None)
    return f"{name}@{config.fleet.host}" if per_host and config.fleet.host else name


def expected_units(config: FleetConfig) -> list[str]:
    """The units the config says run on this host and heartbeat: every ``[daemons.*]`` daemon it runs (``[fleet]
    daemons``, else all) but the broker (it is the bus itself; every heartbeat that arrives proves it is up),
    algo-commander (in algo.target, configured by ``[commander]``) and one algo-strategy@NAME per enabled
    ``process = "own"`` strategy of its engines. The oneshots (pre-market, EOD) do not."""
    local = dict(local_daemons(config))
    units = [f"algo-{name}" for name in local if name != "bus"] + ["algo-commander"]
    units += [f"algo-strategy@{s.name}" for engine, section in config.daemons.engines() if engine in local
              for s in section.strategies if s.enabled and s.process == "own"]
    return units
