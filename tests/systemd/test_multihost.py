"""A paper session spanning three simulated hosts (tests/systemd/hosts.py), each running only its own daemons
under their real units, joined by the bridges through Redis Streams:

  hosta  market data, risk, execution (active: it holds the lease), journal, heartbeat, bus, bridge
  hostb  execution standing by (the same lease and paper book), bus, bridge
  hostc  the engines (fno, equity, options) and pre-market, bus, bridge
  redis  redis-server alone (AOF, appendfsync everysec: the role's default), the bridge's and the lease's ACL users

Both executions see one broker book: the paper book in one directory bind-mounted into both hosts, as the
lease's paper mode documents (`paper_dir` on storage the account's hosts share) and as tests/lease_hosts.py
runs it. Not the Kite emulator: the lease's fencing and the adoption by tag are the same code either way
(`place` is where both brokers are fenced), and the emulator's login, TLS and DNS stand-in inside every
host's namespace would add a minute of boot per run without testing anything multi-host.

One boot for the module; the tests run in order, faults last: the session's invariants are checked after
a 10 s partition of the strategy host and a Redis restart in mid-session, then the active execution's host
is killed outright and the standby must take over without placing anything twice.
"""

from __future__ import annotations

import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from daemons.execution.clientid import client_id
from tests.conftest import require_systemd_sandbox
from tests.helpers import unavailable, wait_until
from tests.systemd import hosts as mh
from tests.systemd.fleet import (
    assert_books_agree,
    assert_every_logged_approval_answered,
    broker_book,
    events,
    jsonl,
    rows,
    session_config,
    today,
    wait_session_closed,
)

pytestmark = pytest.mark.systemd

TTL, MARGIN = 6.0, 1.0  # the lease's: failover takes ~2 TTL after a crash; a Redis outage under ~TTL - MARGIN - TTL/3 costs none
COMMON = ("algo-bus.socket", "algo-bus.service", "algo-heartbeat.service", "algo-bridge.service")  # every host's
DAEMONS = {  # [fleet] daemons: what each host runs
    "hosta": ["marketdata", "risk", "execution", "journal"],
    "hostb": ["execution"],
    "hostc": ["fno", "equity", "options"],
}
UNITS = {name: COMMON + tuple(f"algo-{d}.service" for d in daemons) for name, daemons in DAEMONS.items()}
UNITS["hostc"] += ("algo-premarket.service",)  # the engines' units require it
BRIDGES = {  # each host's bus sources beyond its daemons, what goes out, what comes in
    "hosta": (["algoctl"],  # the operator's commands go out from here
              ["marketdata.*", "features.*", "risk.*", "execution.*", "control.*", "health.heartbeat"],
              ["strategy.*", "features.sync", "control.sync", "health.heartbeat"]),
    "hostb": ([], ["execution.*", "control.sync"], ["marketdata.*", "risk.*"]),
    "hostc": ([], ["strategy.*", "features.sync", "control.sync", "health.heartbeat"],
              ["marketdata.*", "features.*", "risk.*", "execution.*", "control.*", "health.heartbeat"]),
}
WATCHES = {  # the other hosts' units each algo-heartbeat expects (hostb imports no heartbeats: its own execution
    # would clash with hosta's, both named "execution")
    "hosta": {"hostc": [u.removesuffix(".service") for u in UNITS["hostc"] if "premarket" not in u and "bus" not in u]},
    "hostc": {"hosta": [u.removesuffix(".service") for u in UNITS["hosta"] if "bus" not in u]},
}
ORDER_PATH = ("strategy", "risk", "execution")  # the families whose streams are read with acknowledgement
ALGOCTL = f"{sys.prefix}/bin/algoctl"
BACK = re.compile(r"redis reachable again after ([0-9.]+)s")  # the bridge's line at the end of an outage
BRIDGE_METRICS, EXECUTION_METRICS = 9480, 9477  # each host has its own network: the defaults everywhere


def host_config(host: str) -> str:
    extra, exports, imports = BRIDGES[host]
    text = session_config(**{
        'host = ""               # multi-host': f'host = "{host}"               # multi-host',
        'daemons = []            # multi-host': f'daemons = {["bus", "heartbeat", *DAEMONS[host]]}  # multi-host',
        '# paper_dir = "/srv/algo-paper"': f'paper_dir = "{mh.PAPER}"',
        '# hosts = { strat1 = ["algo-fno", "algo-heartbeat", "algo-bridge"] }':
            "hosts = { " + ", ".join(f"{h} = {units}" for h, units in WATCHES.get(host, {}).items()) + " }",
    })
    text += (f'\n[daemons.bridge]\nredis_url = "{mh.REDIS_URL}"\nhost = "{host}"\n'
             f"daemons = {DAEMONS[host] + extra}\nexports = {exports}\nimports = {imports}\nsocket_timeout_sec = 2.0\n")
    if "execution" in DAEMONS[host]:
        text += (f'\n[daemons.execution.lease]\nredis_url = "{mh.REDIS_URL}"\naccount = "paper"\nholder = "{host}"\n'
                 f"ttl_sec = {TTL}\nmargin_sec = {MARGIN}\nsocket_timeout_sec = 1.0\n")
    return text.replace("'", '"')


SPECS = {name: mh.HostSpec(UNITS[name], host_config(name), shares_paper_book="execution" in DAEMONS[name])
         for name in DAEMONS}


@dataclass
class Session:
    hosts: mh.Hosts
    paper: Path

    @property
    def a(self) -> mh.Host:
        return self.hosts["hosta"]

    def stream(self, family: str, topic: str | None = None) -> list[dict[str, Any]]:
        """The events in a family's stream, in order (one twice if a resend put it there twice)."""
        entries: Any = self.hosts.admin().xrange(f"algo:bus:{family}")
        return [orjson.loads(e[b"b"]) for _, e in entries if topic is None or e[b"t"].decode() == topic]

    def stream_ids(self, family: str, topic: str | None = None) -> list[str]:
        return [e["id"] for e in self.stream(family, topic)]

    def exported_signals(self) -> list[str]:
        return [e["payload"]["signal_id"] for e in self.stream("strategy", "strategy.signal")]

    def groups(self, family: str) -> dict[str, dict[str, Any]]:
        return {g["name"].decode(): g for g in self.hosts.admin().xinfo_groups(f"algo:bus:{family}")}


def _execution(host: mh.Host) -> str:
    return host.status("algo-execution.service")


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    require_systemd_sandbox()
    reason = mh.unavailable_reason()
    if reason is not None:
        unavailable("multi-host tests", reason)
    tmp = tmp_path_factory.mktemp("multihost")
    with mh.Hosts(tmp, SPECS) as hosts:
        a, b, c = hosts["hosta"], hosts["hostb"], hosts["hostc"]
        a.start("algo-bus.socket", "algo-bridge.service", "algo-heartbeat.service", "algo-journal.service",
                "algo-risk.service", "algo-execution.service")
        wait_until(lambda: _execution(a).startswith("active"), 30, "hosta's execution to take the lease", interval=0.2)
        b.start("algo-bus.socket", "algo-bridge.service", "algo-heartbeat.service", "algo-execution.service")
        wait_until(lambda: "held by hosta" in _execution(b), 30, "hostb's execution to stand by", interval=0.2)
        c.start("algo-bus.socket", "algo-bridge.service", "algo-heartbeat.service", "algo-fno.service",
                "algo-equity.service", "algo-options.service")
        a.start("algo-marketdata.service")  # the session starts once every host listens
        yield Session(hosts, tmp / "paper")


def test_each_host_runs_only_its_own_daemons_in_its_own_namespaces(session: Session) -> None:
    for name, host in session.hosts.hosts.items():
        listed = host.box.systemctl("list-units", "--no-legend", "--plain", "--state=active", "algo-*.service").stdout
        running = {line.split()[0] for line in listed.splitlines()}
        assert running == {u for u in SPECS[name].units if u.endswith(".service")}, (name, listed)
        assert host.box.run("hostname").stdout.strip() == name
        pid1 = Path(f"/proc/{host.box.pid}/cgroup").read_text()
        assert f"/{mh.PREFIX}-{name}" in pid1 and f"::/{mh.PREFIX}-{name}" in pid1, pid1
        address = host.box.run("ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
        assert f"{session.hosts.net.address(name)}/24" in address
    assert _execution(session.a).startswith("active")
    assert "standby (lease held by hosta" in _execution(session.hosts["hostb"])


def test_a_signal_of_the_strategy_host_becomes_an_order_and_a_fill_on_the_execution_host(session: Session) -> None:
    wait_until(lambda: any(len(p.read_text().splitlines()) > 1 for p in session.a.box.state.glob("journal/*/fills.csv")),
               60, "a fill in hosta's journal", interval=0.5)
    signals = rows(session.a.box, "signals.csv")
    assert {r["engine"] for r in signals} <= {"fno", "equity", "options"} and signals
    # the signal crossed: hostc's bridge exported it, hosta's imported it, with its id unchanged
    assert signals[0]["signal_id"] in session.exported_signals()


def test_a_partitioned_strategy_host_catches_up_and_loses_nothing(session: Session) -> None:
    a, c = session.a, session.hosts["hostc"]
    cut = time.time()
    session.hosts.cut("hostc")
    # an operator pauses a strategy of hostc's while it is cut off: the command must reach it, once
    a.box.run(ALGOCTL, "pause", "ema-nifty", check=True)
    time.sleep(10)
    session.hosts.restore("hostc")
    restored = time.time()
    wait_until(lambda: "redis reachable again" in c.journal("algo-bridge.service"), 30, "hostc's bridge to be back",
               interval=0.5)
    log = c.journal("algo-bridge.service")
    assert log.count("redis unreachable") == 1, log  # one warning per outage, not one per retry

    def paused() -> list[dict[str, Any]]:
        return [e for e in c.journal_json("algo-fno.service") if e.get("MESSAGE") == "ema-nifty paused: entries blocked"]
    wait_until(paused, 30, "the pause to reach hostc's engine")
    assert len(paused()) == 1 and int(paused()[0]["__REALTIME_TIMESTAMP"]) / 1e6 > restored
    # hosta's algo-heartbeat saw the whole host go silent, once, and come back
    def watched() -> list[str]:
        return [m.split(":")[0] for m in a.messages("algo-heartbeat.service", since=cut) if m.startswith("host hostc")]
    wait_until(lambda: "host hostc heartbeats again" in watched(), 20, "hosta's algo-heartbeat to see hostc again")
    assert watched() == ["host hostc silent", "host hostc heartbeats again"]
    a.box.run(ALGOCTL, "resume", "ema-nifty", check=True)
    wait_until(lambda: any(e.get("MESSAGE") == "ema-nifty resumed" for e in c.journal_json("algo-fno.service")), 30,
               "the resume to reach hostc's engine")

    # what hosta's daemons said while hostc was cut off reaches hostc's bus: its groups catch up
    def caught_up() -> bool:
        return all(session.groups(f)["hostc"]["lag"] == 0 and session.groups(f)["hostc"]["pending"] == 0
                   for f in ("risk", "execution"))
    wait_until(caught_up, 30, "hostc's consumer groups to catch up", interval=0.5)
    # and the market reaches its engines again: they signal after the partition
    exported = len(session.stream_ids("strategy"))
    wait_until(lambda: len(session.stream_ids("strategy")) > exported, 30, "a signal of hostc's after the partition",
               interval=0.5)


def test_a_redis_restart_loses_no_order_path_event(session: Session) -> None:
    before = {f: session.stream_ids(f) for f in ORDER_PATH}
    killed = time.time()
    session.hosts.redis.kill()  # kill -9: the AOF (everysec) was written before each reply
    session.hosts.redis.start()
    after = {f: session.stream_ids(f) for f in ORDER_PATH}
    for family in ORDER_PATH:
        assert after[family][:len(before[family])] == before[family], f"{family}: entries lost with the restart"
    for host in session.hosts.hosts.values():
        wait_until(lambda: host.metric(BRIDGE_METRICS, "algo_bridge_redis_up") == 1.0, 30, f"{host.name}'s bridge back")
    assert _execution(session.a).startswith("active"), "a Redis restart shorter than the lease's margin costs no failover"
    outages = [float(m.group(1)) for host in session.hosts.hosts.values()
               for m in map(BACK.match, host.messages("algo-bridge.service", since=killed)) if m]
    print(f"\nredis restart: the bridges' outages {', '.join(f'{o:.1f}s' for o in sorted(outages))}")


def test_the_session_across_hosts_keeps_the_single_host_invariants(session: Session) -> None:
    a = session.a
    wait_session_closed(a.box)
    books = assert_books_agree(a.box, session.paper)
    assert_every_logged_approval_answered(a.box)
    signals = [r["signal_id"] for r in rows(a.box, "signals.csv")]
    assert len(signals) == len(set(signals)) > 0, "a signal journaled twice"
    decisions = Counter(r["signal_id"] for r in rows(a.box, "decisions.csv"))
    assert set(decisions) == set(signals) and set(decisions.values()) == {1}, "each signal one decision"
    approved = {r["signal_id"] for r in rows(a.box, "decisions.csv") if r["decision"] == "approved"}
    assert {client_id(s) for s in approved} >= set(books["orders"]), "an order no approval asked for"
    # every signal hostc exported arrived, once; every order-path event of hosta's went out and was
    # acknowledged by every host importing it (acknowledged = routed by that host's broker)
    exported = session.exported_signals()
    assert set(exported) == set(signals), f"lost: {set(exported) - set(signals)}"
    for topic in ("risk.approved", "execution.order", "execution.fill"):
        assert {e["id"] for e in events(a.box, topic)} <= set(session.stream_ids(topic.split(".")[0], topic)), topic
    for family, readers in (("strategy", ["hosta"]), ("risk", ["hostb", "hostc"]), ("execution", ["hostc"])):
        groups = session.groups(family)
        for reader in readers:
            assert groups[reader]["pending"] == 0 and groups[reader]["lag"] == 0, (family, reader, groups[reader])
    print(f"\nmulti-host session: {len(signals)} signals, {len(books['orders'])} orders, {len(books['trades'])} fills")


def test_killing_the_active_execution_host_hands_over_to_the_standby(session: Session) -> None:
    b = session.hosts["hostb"]
    orders_before, _ = broker_book(session.a.box, session.paper)
    killed = time.time()
    session.a.kill()
    wait_until(lambda: not mh.processes_in(session.hosts.net.netns("hosta")), 10, "every process of hosta gone")

    def took_over() -> dict[str, Any] | None:
        return next((e for e in b.journal_json("algo-execution.service")
                     if str(e.get("MESSAGE", "")).startswith("active: holding the execution lease")), None)
    entry = wait_until(took_over, 4 * TTL + 10, "hostb's execution to become active", interval=0.2)
    assert entry is not None
    failover = int(entry["__REALTIME_TIMESTAMP"]) / 1e6 - killed
    print(f"\nfailover: {failover:.2f}s from kill -9 of hosta to hostb active (lease ttl {TTL:g}s)")
    assert failover >= TTL, "the standby acted before the former active's lease could have run out"
    wait_until(lambda: _execution(b).startswith("active"), 10, "hostb's status line to say active")
    wait_until(lambda: "host hosta silent" in session.hosts["hostc"].journal("algo-heartbeat.service"), 30,
               "hostc's algo-heartbeat to report hosta silent")
    # the former active's orders, found at the broker by tag, are taken as its, not as strays
    former = 'algo_execution_reconciliations_total{result="former_active"}'
    assert b.metric(EXECUTION_METRICS, former) == len(orders_before)

    # risk died with hosta, so no approval claims them: each is reported once max_order_age_sec has passed
    unclaimed = "algo_execution_unclaimed_orders"
    wait_until(lambda: b.metric(EXECUTION_METRICS, unclaimed) == len(orders_before), 30, "the unclaimed orders reported")

    # Every approval of the day delivered again to the new active (its bridge restarted, its consumer group
    # read from the stream's start, as after a Redis that lost the group): each is adopted by its tag, none sent.
    b.box.systemctl("stop", "algo-bridge.service", check=True)
    session.hosts.admin().xgroup_setid("algo:bus:risk", "hostb", "0")
    b.start("algo-bridge.service")
    approved = {e["payload"]["signal_id"] for e in session.stream("risk", "risk.approved")}
    wal = b.box.state / "execution" / today() / "orders.wal"
    wait_until(lambda: wal.exists() and len(intents(wal)) >= len(orders_before), 30,
               "hostb's execution to take up the approvals delivered again", interval=0.5)
    assert set(intents(wal)) <= {client_id(s) for s in approved}
    orders_after, _ = broker_book(session.a.box, session.paper)
    assert orders_after.keys() == orders_before.keys(), "an approval delivered again became a second order"
    wait_until(lambda: b.metric(EXECUTION_METRICS, unclaimed) == 0, 30, "every order claimed by its approval")
    assert "NOT sent" not in b.journal("algo-execution.service")


def intents(wal: Path) -> list[str]:
    return [r["client_id"] for r in jsonl(wal) if r["op"] == "new"]
