"""One active algo-execution per broker account, with a standby: the lease in a real redis-server.

Redis runs on a Unix socket with the ACL user a deployment gives execution's lease (scripts and the few
commands they call, on the lease's keys only). In process: two ``Lease`` objects, and two execution
daemons sharing one paper broker's book as two hosts share Kite. As processes (``tests/lease_hosts.py``):
the active SIGSTOPped past its lease, the standby taking over, the old active woken up.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from daemons.execution.clientid import client_id
from daemons.execution.lease import Lease
from daemons.execution.main import ExecutionDaemon
from daemons.runtime.config import ExecutionLease, FleetConfig
from daemons.runtime.envelope import EventFactory
from daemons.runtime.metrics import DaemonMetrics
from daemons.runtime.redis_login import connect
from tests.helpers import unsent_frames
from tests.lease_hosts import LEASE_ACL, LEASE_CREDENTIAL, LEASE_PASSWORD, Hosts, orders_by_tag
from tests.test_bridge import REPO, RedisServer, _server, run
from tests.test_execution import approval, tick


@pytest.fixture
def redis_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    server = _server(tmp_path, monkeypatch, aof=False, credential=LEASE_CREDENTIAL, password=LEASE_PASSWORD,
                     users=[LEASE_ACL])
    yield server
    server.kill()


def section(server: RedisServer, **over: Any) -> ExecutionLease:
    keys: dict[str, Any] = {"redis_url": f"unix://{server.socket}", "account": "paper", "ttl_sec": 0.5,
                            "margin_sec": 0.1, "socket_timeout_sec": 0.2, **over}
    return ExecutionLease(**keys)


def lease(server: RedisServer, holder: str) -> Lease:
    s = section(server)
    return Lease(s, holder, connect(s, LEASE_PASSWORD), CollectorRegistry())


def test_one_holder_at_a_time_a_standby_waits_out_the_lease_and_a_release_hands_it_over(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        a, b = lease(redis_server, "hostA"), lease(redis_server, "hostB")
        assert await a.acquire() and a.fence == 1
        assert a.refusal().startswith("the lease was just acquired"), "no send before a former holder's lease surely ran out"
        assert not await b.acquire() and b.status() == "standby (lease held by hostA:" + a.token.split(":", 1)[1] + " (fence 1))"
        assert b.refusal() == "this execution does not hold the lease"
        assert await a.extend()
        admin = redis_server.admin()
        # A stops extending: B gets nothing while A's key lives (asked only while it has 100 ms left: a key that
        # expires between the look and the attempt is B's to take). PTTL says 0 while less than a millisecond is
        # left, so wait for -2 (no such key): B's attempt at 0 could still find it (a flake seen under CI)
        while (left := await admin.pttl(a.key)) != -2:
            if left > 100:
                assert not await b.acquire()
            await asyncio.sleep(0.02)
        assert await b.acquire() and b.fence == 2, "the fencing number grows with every holder"
        assert not await a.extend() and a.refusal() == "this execution does not hold the lease"
        assert a.held._value.get() == 0 and b.held._value.get() == 1 and b.takeovers._value.get() == 1
        await b.release()  # a clean stop: A need not wait for the TTL, nor out a former holder's lease
        assert not await b.extend() and math.isinf(b.usable_from)
        assert await a.acquire() and a.fence == 3 and a.refusal() == ""
        assert not await b.acquire() and b.refusal() == "this execution does not hold the lease"
        await admin.aclose()
        for x in (a, b):
            await x.redis.aclose()
    run(scenario)


def test_a_send_needs_more_of_the_lease_left_than_the_margin(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        a = lease(redis_server, "hostA")
        assert await a.acquire()
        a.usable_from = time.monotonic()  # as if the guard had passed
        assert a.refusal() == ""
        a.valid_until = time.monotonic() + 0.05  # what a pause (SIGSTOP) or a partition leaves: less than the margin
        assert "not more than the margin" in a.refusal()
        await a.redis.aclose()
    run(scenario)


def daemon(server: RedisServer, tmp: Path, name: str) -> ExecutionDaemon:
    """An execution "host": its own state directory, the shared paper broker's book, the one lease."""
    lease_keys = section(server, holder=name).model_dump(exclude_none=True)
    config = FleetConfig.model_validate({"daemons": {"execution": {
        "paper_dir": str(tmp / "broker"), "max_order_age_sec": 60, "lease": lease_keys}}})
    d = ExecutionDaemon(config, DaemonMetrics("execution"))
    state = tmp / name
    d.state_path = lambda filename: state / filename  # type: ignore[method-assign]
    return d


def book(tmp: Path) -> dict[str, set[str]]:
    return orders_by_tag(tmp / "broker")


def test_only_the_active_sends_and_an_approval_sent_again_after_a_takeover_is_adopted(
        redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """...and a former active's order whose approval never comes again is reported once, and pages."""
    stamp = EventFactory("risk").stamp
    one, two, lost = (client_id(approval(n)["signal_id"]) for n in (1, 2, 3))

    async def until(what: str, ready: Any) -> None:
        deadline = time.monotonic() + 10
        while not ready():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.01)

    async def scenario() -> None:
        a, b = daemon(redis_server, tmp_path, "hostA"), daemon(redis_server, tmp_path, "hostB")
        await a.setup()
        running_a = asyncio.ensure_future(a.run())
        await until("A active", lambda: a.ledger is not None)
        await b.setup()
        running_b = asyncio.ensure_future(b.run())
        assert b.lease is not None
        await until("B standing by", lambda: b.lease is not None and b.lease.other)
        for d in (a, b):  # both hosts' buses carry every tick and approval (the bridges import risk.*)
            d._on_tick(stamp("marketdata.tick", tick())[0])
            d._on_approved(stamp("risk.approved", approval(1))[0])
            d._on_approved(stamp("risk.approved", approval(3))[0])  # its approval is lost in the takeover
        assert {tag: len(ids) for tag, ids in book(tmp_path).items()} == {one: 1, lost: 1}, "only the active sent"
        assert b.ledger is None and b.lease.status().startswith("standby (lease held by hostA")

        a.stopping.set()  # a clean stop hands the lease over
        await running_a
        await a.drain()
        await until("B active", lambda: b.ledger is not None)
        assert b.lease.fence == 2 and b.reconciled.labels("former_active")._value.get() == 2
        assert b.reconciled.labels("unknown_at_broker")._value.get() == 0, "not a mismatch (no ReconciliationMismatch page)"
        b._on_approved(stamp("risk.approved", approval(1))[0])  # risk sends its recent approvals again
        b._on_approved(stamp("risk.approved", approval(2))[0])
        orders = book(tmp_path)
        assert set(orders) == {one, two, lost} and all(len(ids) == 1 for ids in orders.values()), orders
        assert b.orders[one].order_id in orders[one] and b.orders[one].status == "OPEN"
        assert b.reconciled.labels("adopted")._value.get() == 1
        def unclaimed() -> float | None:
            return b.metrics.registry.get_sample_value("algo_execution_unclaimed_orders")
        assert unclaimed() == 0 and not [r for r in caplog.records if r.levelno >= logging.ERROR]
        b.unclaimed.since[lost] -= b.section.max_order_age_sec  # as if max_order_age_sec went by
        for _ in range(2):
            b.unclaimed.report(b.section.max_order_age_sec)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and errors[0].__dict__["ORDER_ID"] == lost and "BUY 10 INFY" in errors[0].getMessage()
        assert unclaimed() == 1
        b.stopping.set()
        await running_b
        await b.drain()
    run(scenario)


def test_a_paused_active_sends_nothing_once_its_lease_ran_out_and_steps_down(redis_server: RedisServer,
                                                                           tmp_path: Path) -> None:
    """SIGSTOP the active past its lease: the standby takes over (not before the lease ran out), adopts the
    order the old one placed when its approval comes again, sends the next; the old one, woken up, sends
    nothing (a crit line with ORDER_ID, counted) and exits so systemd restarts it as a standby."""
    with Hosts(tmp_path, redis_server, ttl_sec=1.0, margin_sec=0.3) as hosts:
        a, b = hosts.start("hostA"), None
        a.wait_log("active: holding the execution lease")
        b = hosts.start("hostB")
        b.wait_log("execution ready")
        assert b.metric("algo_execution_lease_held") == 0
        hosts.everywhere("marketdata.tick", tick())
        first = approval(1)
        hosts.everywhere("risk.approved", first)
        one = client_id(first["signal_id"])
        hosts.wait(lambda: one in hosts.book(), "the first order at the broker")

        a.proc_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        b.wait_log("active: holding the execution lease")
        assert time.monotonic() - stopped >= 1.0, "the standby took over before the lease could have run out"
        second = approval(2)
        a.publish("risk.approved", second)  # waits in the paused process's socket
        b.publish("risk.approved", first)  # risk sends its recent approvals again
        b.publish("risk.approved", second)
        two = client_id(second["signal_id"])
        hosts.wait(lambda: two in hosts.book(), "the second order at the broker")
        b.wait_log(f"order {one} is at the broker already")

        a.proc_signal(signal.SIGCONT)
        assert a.wait_exit() == 1, "the old active steps down"
        assert f"order {two} NOT sent" in a.log_text() and "stepping down" in a.log_text()
        orders = hosts.book()
        assert set(orders) == {one, two} and all(len(ids) == 1 for ids in orders.values()), orders
        assert b.metric("algo_execution_lease_fence") == 2 and b.metric("algo_execution_lease_takeovers_total") == 1


def test_the_lease_section_is_validated() -> None:
    with pytest.raises(ValueError, match="margin_sec"):
        ExecutionLease(redis_url="unix:///r.sock", account="a", ttl_sec=1, margin_sec=0.5)
    assert FleetConfig().daemons.execution.lease is None, "absent: one execution, no Redis"


def test_the_lease_metrics_are_the_catalogues(redis_server: RedisServer) -> None:
    registry = CollectorRegistry()
    s = section(redis_server)
    Lease(s, "hostA", connect(s, LEASE_PASSWORD), registry)
    text = generate_latest(registry).decode()
    exported = {m[1]: m[2] for m in re.finditer(r"^# TYPE (algo_execution_lease\S+) (\S+)$", text, re.M)}
    section_md = (REPO / "docs" / "METRICS.md").read_text().split("### Execution lease")[1].split("\n### ")[0]
    assert exported == {m[1]: m[2] for m in re.finditer(r"^\| `(algo_\w+)` \| (\w+) \|", section_md, re.M)}


def test_an_approval_for_an_order_kite_reported_before_it_was_known_is_adopted_with_its_fills(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kite reports each trade once: the trades of an order this log did not know yet (a former active's, seen
    by the poll before its approval came again) are kept and recorded when the approval makes it ours."""
    from daemons.execution.broker_types import BrokerOrder, Trade
    from tests.test_execution import daemon as single_host

    d = single_host(tmp_path, monkeypatch)
    assert d.day is not None
    d.day.paper = None  # as with Kite: the broker's view comes from its updates
    cid = client_id(approval(1)["signal_id"])
    at_kite = BrokerOrder("K1", cid, "INFY", "BUY", 10, "MARKET", None, 0, status="COMPLETE", filled=10, average=1000.5)
    d.unclaimed.found(at_kite, [Trade("T1", "K1", cid, "INFY", "BUY", 4, 1000.0, 1)])
    d.unclaimed.found(at_kite, [Trade("T2", "K1", cid, "INFY", "BUY", 6, 1001.0, 2)])  # the next poll's news
    d._on_approved(EventFactory("risk").stamp("risk.approved", approval(1))[0])
    order = d.orders[cid]
    assert (order.order_id, order.status, order.filled, sorted(order.fills)) == ("K1", "COMPLETE", 10, ["T1", "T2"])
    assert d.reconciled.labels("adopted")._value.get() == 1 and not d.unclaimed.orders
    d._close_files()


def test_an_active_cut_off_from_redis_refuses_sends_once_its_lease_may_have_run_out_and_steps_down(
        redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A partition from Redis (here: Redis gone) is a lease that may be lost: no send once less than the margin is
    surely left (logged at crit with ORDER_ID, counted, the intent left in the log, nothing rejected), then the
    active steps down (run() ends unasked: the unit exits and systemd restarts it as a standby)."""
    stamp = EventFactory("risk").stamp
    cid = client_id(approval(1)["signal_id"])

    async def scenario() -> None:
        a = daemon(redis_server, tmp_path, "hostA")
        await a.setup()
        running = asyncio.ensure_future(a.run())
        while a.ledger is None:
            await asyncio.sleep(0.01)
        assert a.lease is not None
        a._on_tick(stamp("marketdata.tick", tick())[0])
        redis_server.kill()
        while not a.lease.refusal():
            await asyncio.sleep(0.01)
        a._on_approved(stamp("risk.approved", approval(1))[0])
        await asyncio.wait_for(running, 10)
        assert not a.stopping.is_set() and a.lease.refused._value.get() == 1
        assert cid not in book(tmp_path) and a.orders[cid].status == "NEW", "left for the active, not rejected"
        assert not [f for f in unsent_frames(a.bus) if f.topic == b"execution.reject"]
        await a.drain()
    with caplog.at_level(logging.WARNING, "algo.execution"):
        run(scenario)
    crit = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert crit[0].getMessage().startswith(f"order {cid} NOT sent: the lease is surely ours for only")
    assert crit[0].__dict__["ORDER_ID"] == cid
    assert "until the lease ran out; stepping down" in crit[1].getMessage()

