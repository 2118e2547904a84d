"""Operator commands that travel over the bus: pause, resume, the kill switch.

algoctl connects as whoever runs it (root, or a member of the fleet's group: the broker checks
SO_PEERCRED), publishes one control event and waits until the broker has taken it.
"""

from __future__ import annotations

import asyncio
import getpass
from typing import Any

from ..runtime.client import BusClient
from ..runtime.config import FleetConfig
from ..runtime.envelope import CONTROL_KILL_SWITCH, CONTROL_PAUSE, CONTROL_RESUME, Event


class BusUnreachable(RuntimeError):
    pass


def target(config: FleetConfig, name: str) -> dict[str, str]:
    """An engine name or a strategy name, as the engines' control handlers expect it."""
    engines = dict(config.daemons.engines())
    if name in engines:
        return {"engine": name}
    for engine, section in engines.items():
        for s in section.strategies:
            if s.name == name:
                return {"engine": engine, "strategy": name}
    known = sorted(engines) + sorted(s.name for sec in engines.values() for s in sec.strategies)
    raise ValueError(f"{name!r} is neither an engine nor a strategy (known: {', '.join(known)})")


def pause(config: FleetConfig, name: str, resume: bool = False) -> Event:
    return send(config, CONTROL_RESUME if resume else CONTROL_PAUSE, {**target(config, name), "by": who()})


def kill_switch(config: FleetConfig, engage: bool, reason: str) -> Event:
    return send(config, CONTROL_KILL_SWITCH, {"engage": engage, "reason": f"{reason} ({who()} via algoctl)"})


def send(config: FleetConfig, topic: str, payload: dict[str, Any], timeout: float = 5.0) -> Event:
    return asyncio.run(_send(config, topic, payload, timeout))


async def _send(config: FleetConfig, topic: str, payload: dict[str, Any], timeout: float) -> Event:
    client = BusClient.for_config(config.bus, source="algoctl")
    await client.start()
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not client.connected:
            if asyncio.get_running_loop().time() > deadline:
                raise BusUnreachable(f"cannot reach the bus at {config.bus.socket} (is algo-bus.socket running, "
                                     f"and are you root or in group {config.fleet.group}?)")
            await asyncio.sleep(0.02)
        return client.publish(topic, payload)
    finally:
        await client.close()


def who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown user"
