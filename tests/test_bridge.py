"""algo-bridge against a real redis-server: two in-process brokers are two hosts, one bridge each.

Redis runs on a Unix socket in the test's directory with an ACL user that may use only stream
commands and PING (as a deployment would give the bridge), no persistence unless a test restarts it.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from daemons.bridge.main import Bridge
from daemons.runtime.client import BusClient
from daemons.runtime.config import (
    BridgeSection,
    BusSection,
    DaemonsSection,
    ExecutionLease,
    ExecutionSection,
    FleetConfig,
    FleetSection,
    load_config,
)
from daemons.runtime.envelope import Event
from daemons.runtime.heartbeat import bus_source, expected_units
from daemons.runtime.metrics import DaemonMetrics
from daemons.runtime.transport import UnixTransport
from tests.helpers import unavailable
from tests.test_bus import client, start_broker

PASSWORD = "bridge-test-password"
CREDENTIAL = "algo_redis_password"
REPO = Path(__file__).resolve().parent.parent


class RedisServer:
    """redis-server as a child of the test, on a Unix socket; ``aof``: the append-only file (``appendfsync``
    always by default), so a kill -9 loses no acknowledged write and a restart keeps streams and consumer
    groups. ``listen`` ("ADDRESS:PORT") also serves TCP there, inside the network namespace ``netns`` if given
    (the Unix socket, a file, stays reachable from the test's own namespace)."""

    def __init__(self, directory: Path, aof: bool = False, users: Sequence[str] = (), *, appendfsync: str = "always",
                 listen: str | None = None, netns: str | None = None) -> None:
        self.dir = directory
        self.socket = directory / "redis.sock"
        self.aof = aof
        self.netns = netns
        self.proc: subprocess.Popen[bytes] | None = None
        conf = directory / "redis.conf"
        address, _, port = (listen or "").rpartition(":")
        conf.write_text("\n".join([
            f"port {port or 0}", *([f"bind {address}", "protected-mode no"] if listen else []),
            f"unixsocket {self.socket}", "unixsocketperm 700", f"dir {directory}", "save ''",
            f"appendonly {'yes' if aof else 'no'}", f"appendfsync {appendfsync}",
            "user default on nopass ~* &* +@all",
            f"user algo on >{PASSWORD} ~algo:* resetchannels -@all +@stream +ping", *users,
        ]) + "\n")
        self.conf = conf

    def start(self) -> None:
        exe = shutil.which("redis-server")
        assert exe is not None
        network = ["nsenter", f"--net=/run/netns/{self.netns}"] if self.netns else []
        self.proc = subprocess.Popen([*network, exe, str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self._accepts():  # the socket file appears at bind(), before listen()
            assert self.proc.poll() is None, "redis-server exited at start"
            assert time.monotonic() < deadline, "redis-server did not listen on its socket"
            time.sleep(0.01)

    def _accepts(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(self.socket))
            except OSError:
                return False
            return True

    def kill(self) -> None:
        """kill -9: what a crash or the OOM killer does."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None
            self.socket.unlink(missing_ok=True)

    def admin(self) -> aioredis.Redis:
        return aioredis.Redis(unix_socket_path=str(self.socket))


def _redis_server_or_skip() -> None:
    if shutil.which("redis-server") is None:
        unavailable("Redis tests", "redis-server is not installed (apt-get install redis-server; scripts/test.sh does)")


def _server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aof: bool, credential: str = CREDENTIAL,
            password: str = PASSWORD, users: Sequence[str] = ()) -> RedisServer:
    """A running redis-server, and ``password`` as the systemd credential ``credential`` of this process."""
    _redis_server_or_skip()
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / credential).write_text(password + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis", aof=aof, users=users)
    server.start()
    return server


@pytest.fixture
def redis_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    server = _server(tmp_path, monkeypatch, aof=False)
    yield server
    server.kill()


@pytest.fixture
def persistent_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    """Restarted by its test: the append-only file, fsynced before every reply, keeps the streams and groups."""
    server = _server(tmp_path, monkeypatch, aof=True)
    yield server
    server.kill()


async def group_ready(server: RedisServer, group: str, *streams: str) -> None:
    """A bridge's consumer group exists (a group starts at "now": entries added before it are not its own)."""
    admin = server.admin()
    try:
        for name in streams:
            deadline = time.monotonic() + 10
            while True:
                try:
                    if any(g["name"] == group.encode() for g in await admin.xinfo_groups(name)):
                        break
                except aioredis.ResponseError:
                    pass  # no such stream yet
                assert time.monotonic() < deadline, f"no group {group} on {name}"
                await asyncio.sleep(0.005)
    finally:
        await admin.aclose()


def run(coro: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        task = asyncio.ensure_future(coro())
        done, _ = await asyncio.wait([task], timeout=60)
        if not done:
            for t in asyncio.all_tasks():
                t.print_stack()  # where it hung
            task.cancel()
            pytest.fail("the test did not finish within 60s")
        task.result()
    asyncio.run(bounded())


async def until(predicate: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def bridge_config(bus: Path, redis: RedisServer, **section: Any) -> FleetConfig:
    return FleetConfig(bus=BusSection(socket=bus),
                       daemons=DaemonsSection(bridge=BridgeSection(redis_url=f"unix://{redis.socket}", **section)))


_running: dict[Bridge, asyncio.Task[None]] = {}


@asynccontextmanager
async def bridge(bus: Path, redis: RedisServer, prepare: Callable[[Bridge], None] | None = None,
                 **section: Any) -> AsyncIterator[Bridge]:
    """A running bridge on ``bus`` and ``redis`` with ``section`` as its [daemons.bridge]."""
    async with bridge_of(bridge_config(bus, redis, **section), prepare) as b:
        yield b


@asynccontextmanager
async def bridge_of(config: FleetConfig, prepare: Callable[[Bridge], None] | None = None) -> AsyncIterator[Bridge]:
    """A running bridge (its run task in ``_running``), stopped as systemd would stop it (SIGTERM: run ends,
    drain, the bus client closed)."""
    b = Bridge(config, DaemonMetrics("bridge"))
    if prepare is not None:
        prepare(b)
    await b.setup()
    await b.bus.start()
    task = _running[b] = asyncio.create_task(b.run())
    try:
        yield b
    finally:
        if not task.done():
            b.stopping.set()
            await task
            await b.drain()
        await b.bus.close()


async def kill(b: Bridge) -> None:
    """The bridge dies: its tasks end where they are, its connections drop without a goodbye."""
    task = _running[b]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    transport = cast(UnixTransport, b.bus.transport)
    if transport._tx is not None:
        transport._tx.abort()
    assert b.redis is not None
    await b.redis.aclose()


class Hosts:
    """Host A and host B: a broker each, in this process, on sockets in the test's directory."""

    def __init__(self, tmp: Path) -> None:
        self.a = tmp / "a.sock"
        self.b = tmp / "b.sock"


@asynccontextmanager
async def two_hosts(tmp: Path) -> AsyncIterator[Hosts]:
    hosts = Hosts(tmp)
    brokers = [await start_broker(hosts.a), await start_broker(hosts.b)]
    try:
        yield hosts
    finally:
        for broker in brokers:
            await broker.close()


def collect(bus: BusClient, pattern: str) -> list[Event]:
    got: list[Event] = []
    bus.subscribe(pattern, got.append)
    return got


class HostB:
    """Host B's bridge importing signals, risk there collecting them, and a raw Redis client to write the
    stream as another host's exporter would."""

    def __init__(self, bridge: Bridge, got: list[Event], admin: aioredis.Redis) -> None:
        self.bridge, self.got, self.admin = bridge, got, admin


@asynccontextmanager
async def host_b_importing_signals(tmp: Path, redis: RedisServer) -> AsyncIterator[HostB]:
    async with two_hosts(tmp) as h, bridge(h.b, redis, **B) as bb:
        risk = await client(h.b, "risk")
        got = collect(risk, "strategy.*")
        await group_ready(redis, "hostB", "algo:bus:strategy")
        await asyncio.sleep(0.05)
        admin = redis.admin()
        try:
            yield HostB(bb, got, admin)
        finally:
            await admin.aclose()
            await risk.close()


def signal_body(event_id: str) -> bytes:
    """A strategy.signal envelope of host A's engine, as its exporter writes it to the stream."""
    return (b'{"id":"%s","ts":1,"type":"strategy.signal","source":"fno","seq":1,"trace":"%s","payload":{}}'
            % (event_id.encode(), event_id.encode()))


# Host A: the feed and an engine (exports signals and ticks, imports decisions and orders).
A: dict[str, Any] = {"host": "hostA", "daemons": ["marketdata", "fno"], "exports": ["strategy.*", "marketdata.*"],
     "imports": ["risk.*", "execution.*"]}
# Host B: risk and execution (exports decisions and orders, imports signals and ticks).
B: dict[str, Any] = {"host": "hostB", "daemons": ["risk", "execution"], "exports": ["risk.*", "execution.*"],
     "imports": ["strategy.*", "marketdata.*"]}


def test_an_event_crosses_hosts_untouched_and_nothing_echoes_back(tmp_path: Path, redis_server: RedisServer) -> None:
    async def go() -> None:
        async with two_hosts(tmp_path) as h, bridge(h.a, redis_server, **A) as ba, bridge(h.b, redis_server, **B) as bb:
            engine = await client(h.a, "fno")
            risk = await client(h.b, "risk")
            signals_at_b = collect(risk, "strategy.*")
            ticks_at_b = collect(risk, "marketdata.*")
            signals_at_a = collect(engine, "strategy.*")
            decisions_at_a = collect(engine, "risk.*")
            await group_ready(redis_server, "hostB", "algo:bus:strategy")
            await group_ready(redis_server, "hostA", "algo:bus:risk")
            await asyncio.sleep(0.05)  # subscriptions in place

            sent = [engine.publish("strategy.signal", {"n": i}, key="INFY") for i in range(20)]
            await until(lambda: len(signals_at_b) == 20, "the signals on host B")
            assert [(e.id, e.source, e.seq, e.trace, e.key, e.payload, e.ts) for e in signals_at_b] == \
                   [(e.id, e.source, e.seq, e.trace, e.key, e.payload, e.ts) for e in sent]

            answer = risk.publish("risk.approved", {"signal": sent[0].id}, trace=sent[0].trace)
            await until(lambda: decisions_at_a, "the decision on host A")
            assert (decisions_at_a[0].id, decisions_at_a[0].trace, decisions_at_a[0].seq) == (answer.id, sent[0].trace, 1)

            feed = await client(h.a, "marketdata")
            feed.publish("marketdata.tick", {"ltp": 1.0}, key="1|INFY|")
            await until(lambda: ticks_at_b, "a tick on host B")
            assert ticks_at_b[0].source == "marketdata" and ticks_at_b[0].key == "1|INFY|"

            await asyncio.sleep(0.3)  # room for an echo to come back, were there one
            await until(lambda: bb.importer.idle and not bb.importer.in_flight, "host B's acknowledgements")
            assert len(signals_at_a) == 20  # host A saw its own signals once: none came back from Redis
            assert len(signals_at_b) == 20 and len(decisions_at_a) == 1
            admin = redis_server.admin()
            # each event entered Redis once: host B did not export the signals it imported, nor A the decision
            assert await admin.xlen("algo:bus:strategy") == 20
            assert await admin.xlen("algo:bus:risk") == 1
            assert ba.stats.exported["order"] == 20 and bb.stats.imported["order"] == 20
            # everything host B imported is acknowledged: its broker routed it back to the bridge
            assert (await admin.xpending("algo:bus:strategy", "hostB"))["pending"] == 0
            await admin.aclose()
            for c in (engine, risk, feed):
                await c.close()
    run(go)


def test_a_killed_bridge_s_pending_entries_are_claimed_and_delivered_once(tmp_path: Path, redis_server: RedisServer) -> None:
    """Bridge b1 reads entries and dies before they reach its host's broker: b2 of the same group claims them
    once they were idle past the claim timeout, and every event reaches host B once."""
    async def go() -> None:
        shared: dict[str, Any] = {**B, "group": "hostB", "claim_timeout_sec": 0.3}
        async with two_hosts(tmp_path) as h, bridge(h.a, redis_server, **A):
            engine = await client(h.a, "fno")
            risk = await client(h.b, "risk")
            got = collect(risk, "strategy.*")
            async with bridge(h.b, redis_server, **{**shared, "host": "b1"}) as b1:
                swallowed: list[bytes] = []

                def swallow(topic: bytes, key: bytes, body: bytes) -> bool:
                    swallowed.append(body)  # read, never published: b1 dies before its host's broker has them
                    return True
                b1.importer.publish = swallow
                await group_ready(redis_server, "hostB", "algo:bus:strategy")
                sent = [engine.publish("strategy.signal", {"n": i}) for i in range(30)]
                await until(lambda: len(swallowed) == 30, "b1 reading every entry")
                await kill(b1)
            admin = redis_server.admin()
            assert (await admin.xpending("algo:bus:strategy", "hostB"))["pending"] == 30
            assert got == []
            async with bridge(h.b, redis_server, **{**shared, "host": "b2"}) as b2:
                await until(lambda: len(got) >= 30, "the claimed entries on host B")
                await asyncio.sleep(0.8)  # more than two claim timeouts: nothing is claimed and published again
                assert [e.id for e in got] == [e.id for e in sent]
                assert b2.stats.claimed == 30
                await until(lambda: b2.importer.idle and not b2.importer.in_flight, "b2's acknowledgements")
                assert (await admin.xpending("algo:bus:strategy", "hostB"))["pending"] == 0
            await admin.aclose()
            for c in (engine, risk):
                await c.close()
    run(go)


def test_a_redelivered_entry_is_published_once(tmp_path: Path, redis_server: RedisServer) -> None:
    """The same event in a stream twice (an exporter's pipeline retried after a lost reply) reaches host B once."""
    async def go() -> None:
        async with host_b_importing_signals(tmp_path, redis_server) as b:
            bb, got, admin = b.bridge, b.got, b.admin
            entry = {"t": "strategy.signal", "k": "", "h": "hostA", "b": signal_body("fno-1-1")}
            await admin.xadd("algo:bus:strategy", entry)  # type: ignore[arg-type]
            await until(lambda: got, "the event on host B")
            await until(lambda: not bb.importer.in_flight, "the echo")
            await admin.xadd("algo:bus:strategy", entry)  # type: ignore[arg-type]
            await until(lambda: bb.stats.redelivered == 1, "the second copy seen")
            await asyncio.sleep(0.1)
            assert [e.id for e in got] == ["fno-1-1"]
            await until(lambda: bb.importer.idle, "acknowledgements")
            assert (await admin.xpending("algo:bus:strategy", "hostB"))["pending"] == 0
    run(go)


def test_redis_restarting_while_the_order_path_flows_loses_nothing_within_the_outbox(
        tmp_path: Path, persistent_redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    """kill -9 of Redis (AOF, appendfsync always) mid-stream, events published while it is down, a restart:
    every event reaches host B once and in order, up to the outbox bound; beyond it the rest are counted."""
    async def go() -> None:
        async with two_hosts(tmp_path) as h, bridge(h.a, persistent_redis, **A, outbox_events=40, reconnect_max_sec=0.2) as ba, \
                bridge(h.b, persistent_redis, **B, reconnect_max_sec=0.2) as bb:
            engine = await client(h.a, "fno")
            risk = await client(h.b, "risk")
            got = collect(risk, "strategy.*")
            await asyncio.sleep(0.05)
            await group_ready(persistent_redis, "hostB", "algo:bus:strategy")
            sent = []
            for i in range(50):
                sent.append(engine.publish("strategy.signal", {"n": i}))
                await asyncio.sleep(0.002)
            await until(lambda: ba.stats.exported["order"] == 50, "the first 50 in Redis")
            persistent_redis.kill()
            for i in range(50, 100):  # 40 wait in host A's outbox; 10 are beyond it
                sent.append(engine.publish("strategy.signal", {"n": i}))
                await asyncio.sleep(0.002)
            await until(lambda: not ba.link.up and not bb.link.up, "both bridges to notice")
            await until(lambda: len(ba.exporter.order) == 40, "host A's outbox to fill")
            persistent_redis.start()
            await until(lambda: not ba.exporter.order, "host A's outbox to drain into the restarted Redis")
            for i in range(100, 150):
                sent.append(engine.publish("strategy.signal", {"n": i}))
                await asyncio.sleep(0.002)
            await until(lambda: len(got) == 140, "every event within the bound on host B", timeout=20)
            await asyncio.sleep(0.2)
            dropped = ba.stats.dropped["outbox_full"]
            assert dropped == 10
            kept = [e.id for e in sent[:90]] + [e.id for e in sent[100:]]  # the 10 beyond the outbox were dropped
            assert [e.id for e in got] == kept
            for c in (engine, risk):
                await c.close()
    with caplog.at_level(logging.INFO, logger="algo.bridge"):
        run(go)
    unreachable = [r for r in caplog.records if r.getMessage().startswith("redis unreachable")]
    back = [r for r in caplog.records if r.getMessage().startswith("redis reachable again")]
    bridge_log = "\n".join(r.getMessage() for r in caplog.records if r.name == "algo.bridge")
    assert len(unreachable) == 2 and len(back) == 2, bridge_log  # once per bridge


def test_malformed_stream_entries_are_counted_and_skipped(tmp_path: Path, redis_server: RedisServer) -> None:
    async def go() -> None:
        async with host_b_importing_signals(tmp_path, redis_server) as b:
            bb, got, admin = b.bridge, b.got, b.admin
            good = signal_body("fno-1-9")
            bad: list[dict[Any, Any]] = [
                {"x": "no fields of ours"},
                {"t": "strategy.signal", "k": "", "h": "hostA", "b": "not json"},
                {"t": "strategy.signal", "k": "", "h": "hostA", "b": good.replace(b'"seq":1', b'"seq":"one"')[:40] + b"}"},
                {"t": "risk.approved", "k": "", "h": "hostA", "b": good},  # another family's topic in this stream
                {"t": "strategy.signal", "k": "", "h": "hostA", "b": good.replace(b"strategy.signal", b"strategy.other")},
                {"t": "Strategy Signal", "k": "", "h": "hostA", "b": good},
                {"t": "strategy.signal", "k": "", "h": b"\xff", "b": good},
            ]
            for fields in bad:
                await admin.xadd("algo:bus:strategy", fields)
            await admin.xadd("algo:bus:strategy", {"t": "strategy.signal", "k": "", "h": "hostA", "b": good})
            await until(lambda: got, "the good event on host B")
            await until(lambda: bb.importer.idle and not bb.importer.in_flight, "acknowledgements")
            assert [e.id for e in got] == ["fno-1-9"]
            assert bb.stats.dropped["malformed"] == len(bad)
            assert (await admin.xpending("algo:bus:strategy", "hostB"))["pending"] == 0  # never handed out again
            assert bb.link.up
    run(go)


def test_events_of_other_hosts_daemons_are_not_exported(tmp_path: Path, redis_server: RedisServer) -> None:
    """Only the sources the config names as this host's go out: an imported event published on this host's
    bus, or a daemon of another host, never does (no loops even when two hosts export the same topic)."""
    async def go() -> None:
        both: dict[str, Any] = {"exports": ["strategy.*"], "imports": ["strategy.*"]}
        async with two_hosts(tmp_path) as h, bridge(h.a, redis_server, host="hostA", daemons=["fno"], **both), \
                bridge(h.b, redis_server, host="hostB", daemons=["equity"], **both):
            fno = await client(h.a, "fno")
            stranger = await client(h.a, "equity")  # hostB's daemon name on hostA's bus: not hostA's to export
            equity = await client(h.b, "equity")
            at_a, at_b = collect(fno, "strategy.*"), collect(equity, "strategy.*")
            await group_ready(redis_server, "hostA", "algo:bus:strategy")
            await group_ready(redis_server, "hostB", "algo:bus:strategy")
            await asyncio.sleep(0.05)
            fno.publish("strategy.signal", {})
            stranger.publish("strategy.signal", {})
            equity.publish("strategy.signal", {})
            await until(lambda: len(at_a) == 3 and len(at_b) == 2, "each host's signals on the other")
            await asyncio.sleep(0.3)
            assert sorted(e.source for e in at_a) == ["equity", "equity", "fno"]
            assert sorted(e.source for e in at_b) == ["equity", "fno"]
            admin = redis_server.admin()
            assert await admin.xlen("algo:bus:strategy") == 2
            await admin.aclose()
            for c in (fno, stranger, equity):
                await c.close()
    run(go)


def test_the_bridge_logs_in_as_the_acl_user_and_a_wrong_password_is_an_outage_not_a_crash(
        tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> None:
        creds = tmp_path / "wrong"
        creds.mkdir()
        (creds / CREDENTIAL).write_text("not-the-password")
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
        async with two_hosts(tmp_path) as h, bridge(h.a, redis_server, **A, reconnect_max_sec=0.1) as ba:
            engine = await client(h.a, "fno")
            await asyncio.sleep(0.05)
            engine.publish("strategy.signal", {})
            await until(lambda: ba.link.errors >= 2, "the refused logins")
            assert not ba.link.up and len(ba.exporter.order) == 1  # held, not lost
            await engine.close()
            ba.exporter.order.clear()  # nothing for drain to wait on
    run(go)


def test_a_missing_credential_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from daemons.runtime.config import ConfigError
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    b = Bridge(FleetConfig(daemons=DaemonsSection(bridge=BridgeSection(redis_url="redis://10.0.0.1:6379", daemons=["fno"]))),
               DaemonMetrics("bridge"))
    with pytest.raises(ConfigError, match="LoadCredential=algo_redis_password"):
        asyncio.run(b.setup())


def test_the_bridge_section_is_validated(tmp_path: Path) -> None:
    from daemons.runtime.config import ConfigError
    toml = tmp_path / "fleet.toml"
    toml.write_text('[daemons.bridge]\nredis_url = "redis://10.0.0.5:6379"\ndaemons = ["fno"]\nexports = ["*", "risk"]\n'
                    'imports = ["Strategy.*"]\ntls_ca_file = "/etc/ssl/redis-ca.pem"\nmetrics_port = 9478\n')
    with pytest.raises(ConfigError) as err:
        load_config(toml)
    problems = "\n".join(map(str, err.value.problems))
    assert "daemons.bridge.exports: '*' is not a topic or 'prefix.*'" in problems
    assert "daemons.bridge.imports: 'Strategy.*' is not a topic" in problems
    assert "daemons.bridge.tls_ca_file: is for a rediss:// (TLS) redis_url" in problems
    toml.write_text('[daemons.bridge]\nredis_url = "rediss://redis.example:6380"\ndaemons = ["fno"]\n'
                    'tls_ca_file = "/etc/ssl/redis-ca.pem"\nmetrics_port = 9478\n')
    with pytest.raises(ConfigError, match=r"daemons\.bridge\.metrics_port: port 9478 is already used by daemons\.journal"):
        load_config(toml)
    toml.write_text('[daemons.bridge]\nredis_url = "rediss://redis.example:6380"\ndaemons = ["fno"]\n'
                    'tls_ca_file = "/etc/ssl/redis-ca.pem"\nexports = ["strategy.*"]\n')
    config = load_config(toml)
    assert config.daemons.bridge is not None and "algo-bridge" in expected_units(config)
    toml.write_text("")
    assert "algo-bridge" not in expected_units(load_config(toml))  # a one-host fleet expects no bridge


def test_the_bridge_exports_exactly_its_catalogue_rows(tmp_path: Path) -> None:
    import re

    from prometheus_client import generate_latest
    b = Bridge(FleetConfig(daemons=DaemonsSection(bridge=BridgeSection(redis_url="redis://10.0.0.1:6379", daemons=["fno"]))),
               DaemonMetrics("bridge"))
    b.stats.redis_seconds.labels("xadd").observe(0.001)
    text = generate_latest(b.metrics.registry).decode()
    exported = {m[1]: m[2] for m in re.finditer(r"^# TYPE (algo_bridge\S+) (\S+)$", text, re.M)}
    section = (REPO / "docs" / "METRICS.md").read_text().split("### Multi-host only")[1].split("\n### ")[0]
    assert exported == {m[1]: m[2] for m in re.finditer(r"^\| `(algo_\w+)` \| (\w+) \|", section, re.M)}


def test_a_bridge_killed_after_the_echo_and_before_its_xack_publishes_nothing_twice(
        tmp_path: Path, redis_server: RedisServer) -> None:
    """b1 published the events on host B and its broker routed them back, but b1 dies before its XACKs reach
    Redis. The broker hands the echoes b1 never acknowledged to the next bridge (acks), which so knows host B
    has those events: it claims the pending entries and acknowledges them without publishing them again."""
    async def go() -> None:
        shared: dict[str, Any] = {**B, "group": "hostB", "claim_timeout_sec": 0.3}

        def no_xacks(b: Bridge) -> None:
            async def never(redis: Any) -> None:
                await asyncio.Event().wait()
            b.importer.run_acks = never  # type: ignore[method-assign]

        async with two_hosts(tmp_path) as h, bridge(h.a, redis_server, **A):
            engine = await client(h.a, "fno")
            risk = await client(h.b, "risk")
            got = collect(risk, "strategy.*")
            async with bridge(h.b, redis_server, no_xacks, **{**shared, "host": "b1"}) as b1:
                await group_ready(redis_server, "hostB", "algo:bus:strategy")
                sent = [engine.publish("strategy.signal", {"n": i}) for i in range(30)]
                await until(lambda: len(got) == 30 and not b1.importer.in_flight, "the events routed on host B")
                await kill(b1)
            admin = redis_server.admin()
            assert (await admin.xpending("algo:bus:strategy", "hostB"))["pending"] == 30
            async with bridge(h.b, redis_server, **{**shared, "host": "b2"}) as b2:
                await until(lambda: b2.stats.claimed == 30 and b2.importer.idle, "b2 claiming and acknowledging")
                await asyncio.sleep(0.3)
                assert b2.stats.redelivered == 30 and b2.stats.imported["order"] == 0
                assert [e.id for e in got] == [e.id for e in sent]  # each once
                assert (await admin.xpending("algo:bus:strategy", "hostB"))["pending"] == 0
            await admin.aclose()
            for c in (engine, risk):
                await c.close()
    run(go)


def test_a_redis_that_lost_its_data_gets_the_groups_again(tmp_path: Path, redis_server: RedisServer,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Redis restarted without persistence: streams and groups are gone. The importing bridge says so once and
    makes its group again from the stream's start, so what is published after the restart still crosses."""
    async def go() -> None:
        async with two_hosts(tmp_path) as h, bridge(h.a, redis_server, **A, reconnect_max_sec=0.1), \
                bridge(h.b, redis_server, **B, reconnect_max_sec=0.1) as bb:
            engine = await client(h.a, "fno")
            risk = await client(h.b, "risk")
            got = collect(risk, "strategy.*")
            await group_ready(redis_server, "hostB", "algo:bus:strategy")
            engine.publish("strategy.signal", {"n": 0})
            await until(lambda: len(got) == 1, "the first event")
            redis_server.kill()
            await until(lambda: not bb.link.up, "host B's bridge to notice")
            redis_server.start()
            later = [engine.publish("strategy.signal", {"n": i}) for i in range(1, 6)]
            await until(lambda: len(got) == 6, "the events published after the restart")
            assert [e.id for e in got[1:]] == [e.id for e in later]
            for c in (engine, risk):
                await c.close()
    with caplog.at_level(logging.INFO, logger="algo.bridge"):
        run(go)
    lost = sorted(r.getMessage().split()[5] for r in caplog.records if "lost the consumer group" in r.getMessage())
    assert lost == ["hostA", "hostB"]  # once per importing bridge


def test_another_host_s_event_named_like_a_daemon_of_this_host_is_not_imported(
        tmp_path: Path, redis_server: RedisServer) -> None:
    """Names must be unique across hosts: an import named like a local daemon would be exported again."""
    async def go() -> None:
        async with two_hosts(tmp_path) as h, bridge(h.a, redis_server, **A), \
                bridge(h.b, redis_server, **{**B, "daemons": ["risk", "fno"]}) as bb:
            engine = await client(h.a, "fno")
            risk = await client(h.b, "risk")
            got = collect(risk, "strategy.*")
            await group_ready(redis_server, "hostB", "algo:bus:strategy")
            engine.publish("strategy.signal", {})
            await until(lambda: bb.stats.dropped["name_clash"] == 1 and bb.importer.idle, "the clash counted")
            await asyncio.sleep(0.1)
            assert got == []
            admin = redis_server.admin()
            assert await admin.xlen("algo:bus:strategy") == 1  # and nothing went back out
            await admin.aclose()
            for c in (engine, risk):
                await c.close()
    run(go)


def test_algo_bridge_without_its_section_exits_78_naming_it(tmp_path: Path) -> None:
    """A host of a one-host fleet that starts the unit by mistake: a config error (no restart loop), not a crash."""
    config = tmp_path / "fleet.toml"
    config.write_text("")
    result = subprocess.run([sys.executable, "-m", "daemons.bridge", "--config", str(config)],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 78, result.stderr
    assert "daemons.bridge: algo-bridge runs only with this section" in result.stderr


def test_market_data_is_trimmed_and_a_bridge_behind_gets_the_newest_tick_per_instrument(
        tmp_path: Path, redis_server: RedisServer) -> None:
    """Ticks are never waited for: the stream is trimmed (MAXLEN ~), and a read that finds the bridge behind
    publishes the newest tick of each instrument, the others counted as conflated (the local bus's rule)."""
    async def go() -> None:
        async with two_hosts(tmp_path) as h, bridge(h.a, redis_server, **A, marketdata_maxlen=100), \
                bridge(h.b, redis_server, **B) as bb:
            feed = await client(h.a, "marketdata")
            risk = await client(h.b, "risk")
            ticks = collect(risk, "marketdata.*")
            await asyncio.sleep(0.2)  # host B's first XREAD is waiting ("$": ticks from now on)
            admin = redis_server.admin()
            for i in range(1000):
                feed.publish("marketdata.tick", {"i": i}, key=f"{i % 10}|SYM{i % 10}|")
                if i % 100 == 99:
                    await asyncio.sleep(0.01)
            await until(lambda: bb.stats.imported["marketdata"] >= 10 and ticks, "ticks on host B")
            assert await admin.xlen("algo:bus:marketdata") <= 300  # trimmed near 100, in whole nodes
            assert (await admin.xinfo_stream("algo:bus:marketdata"))["groups"] == 0  # no group, nothing to acknowledge

            # 3,000 ticks of 10 instruments arrive at once, in one MULTI/EXEC (Redis serves host B's blocked XREAD
            # only after it), as when B stalled: its next read is a full batch, behind, whatever the machine's load
            pipe = admin.pipeline(transaction=True)
            body = (b'{"id":"marketdata-x-%d","ts":1,"type":"marketdata.tick","source":"marketdata","seq":%d,'
                    b'"trace":"t","payload":{"i":%d}}')
            before = len(ticks)
            conflated = bb.stats.dropped["conflated"]
            for i in range(3000):
                pipe.xadd("algo:bus:marketdata", {"t": "marketdata.tick", "k": f"{i % 10}|S{i % 10}|", "h": "hostA",
                                                  "b": body % (i, 10_000 + i, i)})
            await pipe.execute()
            await until(lambda: bb.stats.dropped["conflated"] > conflated and len(ticks) - before >= 10,
                        "the newest ticks of the burst")
            await asyncio.sleep(0.2)
            got = ticks[before:]
            assert len(got) < 3000
            newest = {e.key: e.payload["i"] for e in got}
            assert newest == {f"{k}|S{k}|": 2990 + k for k in range(10)}  # the last tick of every instrument arrived
            await admin.aclose()
            for c in (feed, risk):
                await c.close()
    run(go)


def test_the_execution_that_takes_over_on_another_host_reaches_risk_on_the_former_active_s_host(
        tmp_path: Path, redis_server: RedisServer) -> None:
    """Under a lease, active and standby executions run on two hosts; each publishes as execution@<host>, so
    when the standby takes over (the former active's execution dead, its risk and journal alive) its orders
    are imported there, not dropped as a clash with the local daemon named "execution"."""
    lease = ExecutionLease(redis_url=f"unix://{redis_server.socket}", account="paper")

    def host(bus: Path, name: str, section: dict[str, Any]) -> FleetConfig:
        base = bridge_config(bus, redis_server, **section)
        return base.model_copy(update={"fleet": FleetSection(host=name), "daemons": base.daemons.model_copy(
            update={"execution": ExecutionSection(lease=lease)})})

    async def go() -> None:
        hosts = {"hosta": {"daemons": ["risk", "execution"], "exports": ["risk.*", "execution.*"], "imports": ["execution.*"]},
                 "hostb": {"daemons": ["execution"], "exports": ["execution.*"], "imports": ["risk.*"]}}
        async with two_hosts(tmp_path) as h, bridge_of(host(h.a, "hosta", hosts["hosta"])) as ba, \
                bridge_of(host(h.b, "hostb", hosts["hostb"])):
            config_b = host(h.b, "hostb", hosts["hostb"])
            standby = await client(h.b, bus_source("execution", config_b))
            risk = await client(h.a, "risk")
            got = collect(risk, "execution.*")
            await group_ready(redis_server, "hosta", "algo:bus:execution")
            standby.publish("execution.order", {"client_id": "X1"})
            await until(lambda: len(got) == 1, "the new active's order at risk on the former active's host")
            assert got[0].source == "execution@hostb" and ba.stats.dropped["name_clash"] == 0
            for c in (standby, risk):
                await c.close()
    run(go)
