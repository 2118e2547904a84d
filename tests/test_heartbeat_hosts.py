"""Liveness across hosts: host B's heartbeats reach host A's algo-heartbeat through two bridges and a real
redis-server, every host's own algo-heartbeat and algo-bridge cross without clashing (their bus sources carry
``[fleet] host``), and when B's daemons stop heartbeating, or B is cut off (its bridge gone), A flags them silent,
and the whole host.

Two in-process brokers are the two hosts, as in tests/test_bridge.py; A's algo-heartbeat runs in this process on
A's broker, B's daemons are bus clients on B's broker publishing heartbeats as their runners would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemons.heartbeat.liveness import State
from daemons.heartbeat.main import HeartbeatDaemon
from daemons.runtime.client import BusClient
from daemons.runtime.config import BridgeSection, BusSection, DaemonsSection, FleetConfig, FleetSection, HeartbeatSection
from daemons.runtime.envelope import HEALTH_HEARTBEAT
from daemons.runtime.heartbeat import Heartbeat, bus_source
from daemons.runtime.metrics import DaemonMetrics
from tests.test_bridge import RedisServer, _running, _server, bridge_of, group_ready, run, two_hosts, until
from tests.test_bus import client

INTERVAL = 0.05
HEARTBEAT = HeartbeatSection(interval_sec=INTERVAL, silent_after_sec=0.5,
                             hosts={"hostb": ["algo-risk", "algo-heartbeat", "algo-bridge"]})


@pytest.fixture
def redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    server = _server(tmp_path, monkeypatch, aof=False)
    yield server
    server.kill()


def host_config(host: str, bus: Path, redis: RedisServer, daemons: list[str]) -> FleetConfig:
    """A host of a multi-host fleet: named, its bridge exporting and importing everyone's heartbeats."""
    bridge = BridgeSection(redis_url=f"unix://{redis.socket}", daemons=daemons, exports=["health.heartbeat"],
                           imports=["health.heartbeat"])
    return FleetConfig(fleet=FleetSection(host=host), bus=BusSection(socket=bus),
                       daemons=DaemonsSection(heartbeat=HEARTBEAT, bridge=bridge))


async def heartbeating(bus: BusClient, unit: str, host: str) -> None:
    """What a daemon's runner does: a heartbeat every interval."""
    beat = Heartbeat(unit, host, os.getpid(), 1.0, INTERVAL, True, None, 0.0, None)
    while True:
        bus.publish(HEALTH_HEARTBEAT, beat.payload())
        await asyncio.sleep(INTERVAL)


def test_another_host_s_daemons_are_judged_through_the_bridges_and_a_host_cut_off_is_silent(
        tmp_path: Path, redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="algo.heartbeat")

    async def go() -> None:
        async with two_hosts(tmp_path) as h:
            config_a = host_config("hosta", h.a, redis, ["fno"])
            config_b = host_config("hostb", h.b, redis, ["risk"])
            assert bus_source("heartbeat", config_b) == "heartbeat@hostb"
            metrics = DaemonMetrics("heartbeat")
            judge = HeartbeatDaemon(config_a, metrics)
            assert judge.bus.source == "heartbeat@hosta"
            await judge.bus.start()
            tasks = [asyncio.create_task(judge.run()),
                     asyncio.create_task(heartbeating(judge.bus, "algo-heartbeat", "hosta"))]

            def sample(name: str, **labels: str) -> Any:
                return metrics.registry.get_sample_value(name, labels)

            def states() -> dict[str, State]:
                return {p.unit: p.state for p in judge.liveness.peers.values() if p.host == "hostb"}

            async with bridge_of(config_a) as ba, bridge_of(config_b) as bb:
                b_task = _running[bb]
                await group_ready(redis, "hosta", "algo:bus:health")
                await group_ready(redis, "hostb", "algo:bus:health")
                risk = await client(h.b, "risk")
                b_heartbeat = await client(h.b, bus_source("heartbeat", config_b))
                b_tasks = {"algo-risk": asyncio.create_task(heartbeating(risk, "algo-risk", "hostb")),
                           "algo-heartbeat": asyncio.create_task(heartbeating(b_heartbeat, "algo-heartbeat", "hostb")),
                           "algo-bridge": asyncio.create_task(heartbeating(bb.bus, "algo-bridge", "hostb"))}
                try:
                    # expected from the start: waiting until B's heartbeats come over
                    await until(lambda: states() == dict.fromkeys(b_tasks, State.ALIVE), "host B's daemons alive on A")
                    assert sample("algo_heartbeat_silent", host="hostb", unit="algo-heartbeat") == 0
                    assert sample("algo_heartbeat_host_silent", host="hostb") == 0
                    # every host's algo-heartbeat and algo-bridge crossed: no name clash either way
                    assert ba.stats.dropped["name_clash"] == bb.stats.dropped["name_clash"] == 0
                    await until(lambda: bb.stats.imported["order"] > 0, "host A's heartbeats imported on B")

                    b_tasks.pop("algo-risk").cancel()  # B's risk stops heartbeating: it alone is silent on A
                    await until(lambda: states()["algo-risk"] is State.SILENT, "algo-risk on hostb silent")
                    assert sample("algo_heartbeat_silent", host="hostb", unit="algo-risk") == 1
                    assert states()["algo-heartbeat"] is State.ALIVE
                    assert sample("algo_heartbeat_host_silent", host="hostb") == 0

                    b_task.cancel()  # B's bridge gone: B is cut off, every daemon of it silent on A, the host too
                    await asyncio.gather(b_task, return_exceptions=True)
                    await until(lambda: sample("algo_heartbeat_host_silent", host="hostb") == 1, "host B silent on A")
                    assert set(states().values()) == {State.SILENT}
                    assert sample("algo_heartbeat_silent", host="hosta", unit="algo-heartbeat") == 0
                    assert sample("algo_heartbeat_host_silent", host="hosta") == 0
                    assert "SILENT: host hostb" in judge.status()
                finally:
                    for task in b_tasks.values():
                        task.cancel()
                    await risk.close()
                    await b_heartbeat.close()
            judge.stopping.set()
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks)
            await judge.bus.close()

    run(go)
    lines = [r.getMessage() for r in caplog.records if r.name == "algo.heartbeat" and r.levelno >= logging.ERROR]
    assert [m for m in lines if m.startswith("host ")] == [
        "host hostb silent: none of its daemons' heartbeats arrive (the host is down, or cut off from this one: its "
        "bridge, this host's bridge, or Redis)"]
    assert any(m.startswith("algo-risk on hostb silent: no heartbeat for") for m in lines)
