"""Heartbeats: the payload contract, the liveness bookkeeping, and real daemons on a real bus whose
heartbeats algo-heartbeat sees, and one that stops (SIGSTOP) flagged silent until it resumes."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemons.algoctl.processes import stop_all
from daemons.heartbeat.liveness import Liveness, State
from daemons.runtime.config import ConfigError, fleet_ports, load_config
from daemons.runtime.heartbeat import BadHeartbeat, Heartbeat, bus_source, expected_units, this_host
from tests.conftest import REPO, TEST_CONFIG
from tests.helpers import wait_until
from tests.ports import free_ports

HOST = socket.gethostname()


def beat(unit: str = "algo-fno", host: str = "h1", **changes: Any) -> Heartbeat:
    return Heartbeat(unit, host, 42, 12.5, 1.0, True, None, 0.002, 0.4)._replace(**changes)


# --- the contract ------------------------------------------------------------------------------------

def test_the_payload_round_trips_and_is_versioned() -> None:
    b = beat(healthy=False, reason="feed stalled", tick_age_sec=None)
    payload = b.payload()
    assert payload == {"v": 1, "unit": "algo-fno", "host": "h1", "pid": 42, "uptime_sec": 12.5, "interval_sec": 1.0,
                       "healthy": False, "reason": "feed stalled", "loop_lag_sec": 0.002, "tick_age_sec": None}
    assert Heartbeat.parse(payload) == b


@pytest.mark.parametrize(("change", "field"), [
    ({"v": 2}, "v"), ({"unit": ""}, "unit"), ({"host": None}, "host"), ({"pid": "42"}, "pid"),
    ({"pid": True}, "pid"), ({"healthy": 1}, "healthy"), ({"reason": "why"}, "reason"),
    ({"healthy": False}, "reason"), ({"uptime_sec": -1}, "uptime_sec"),
    ({"interval_sec": float("nan")}, "interval_sec"),
    ({"loop_lag_sec": "0"}, "loop_lag_sec"), ({"tick_age_sec": "old"}, "tick_age_sec"),
])
def test_a_payload_that_breaks_the_contract_is_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(BadHeartbeat, match=rf"^{field}: "):
        Heartbeat.parse({**beat().payload(), **change})
    with pytest.raises(BadHeartbeat, match=r"^v: "):
        Heartbeat.parse({"daemon": "heartbeat", "pid": 1, "uptime_sec": 1.0})  # what algo-heartbeat used to send


def test_the_expected_units_come_from_the_config(tmp_path: Path) -> None:
    text = (REPO / "configs" / "paper.toml").read_text().replace(
        'name = "rsi-infy"\n', 'name = "rsi-infy"\nprocess = "own"\nmetrics_port = 9490\n')
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    assert expected_units(load_config(path)) == [
        "algo-heartbeat", "algo-marketdata", "algo-fno", "algo-equity", "algo-options", "algo-risk",
        "algo-execution", "algo-journal", "algo-commander", "algo-strategy@rsi-infy"]


def test_a_host_of_a_multi_host_fleet_expects_only_its_own_daemons(tmp_path: Path) -> None:
    """[fleet] daemons: the strategy host's heartbeat expects its engine (and their own-process strategies), not
    the market data, risk, execution and journal of the other hosts; a bad list is refused by name."""
    text = (REPO / "configs" / "paper.toml").read_text().replace(
        'name = "rsi-infy"\n', 'name = "rsi-infy"\nprocess = "own"\nmetrics_port = 9490\n').replace(
        "daemons = []", 'daemons = ["bus", "heartbeat", "equity"]')
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    assert expected_units(load_config(path)) == ["algo-heartbeat", "algo-equity", "algo-commander", "algo-strategy@rsi-infy"]
    # algo-premarket checks the ports of this host's daemons only
    assert [path for _, path in fleet_ports(load_config(path))] == [
        "daemons.bus.metrics_port", "daemons.heartbeat.metrics_port", "daemons.equity.metrics_port",
        "commander.metrics_port", "daemons.equity.strategies.0.metrics_port"]
    path.write_text(text.replace('daemons = ["bus", "heartbeat", "equity"]', 'daemons = ["bus", "equity", "mdata"]'))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert [(p.path, p.message) for p in err.value.problems] == [
        ("fleet.daemons", "'mdata' is not a daemon (one of bus, heartbeat, marketdata, fno, equity, options, risk, "
                          "execution, journal)"),
        ("fleet.daemons", "must include 'heartbeat': every host runs algo-heartbeat")]


def test_the_silence_limit_must_exceed_two_heartbeats(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text("[daemons.heartbeat]\ninterval_sec = 1.0\nsilent_after_sec = 1.5\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert [p.path for p in err.value.problems] == ["daemons.heartbeat.silent_after_sec"]


# --- liveness -----------------------------------------------------------------------------------------

def test_never_seen_went_silent_and_back() -> None:
    live = Liveness("h1", silent_after=5.0)
    live.expect(["algo-fno", "algo-risk"], now=0.0)
    first = live.heard(beat("algo-risk"), now=1.0, wall=1001.0)
    assert first is not None and (first.before, first.peer.state) == (State.WAITING, State.ALIVE)
    assert live.check(now=4.0) == []
    changes = live.check(now=5.5)
    assert [(c.peer.unit, c.before, c.peer.state) for c in changes] == [("algo-fno", State.WAITING, State.SILENT)]
    assert live.check(now=5.6) == []  # once per transition
    changes = live.check(now=6.5)
    assert [(c.peer.unit, c.before, round(c.quiet_for, 1)) for c in changes] == [("algo-risk", State.ALIVE, 5.5)]
    back = live.heard(beat("algo-risk"), now=9.0, wall=1009.0)
    assert back is not None and back.before is State.SILENT and back.peer.state is State.ALIVE
    assert [p.unit for p in live.silent()] == ["algo-fno"]
    assert live.peers[("h1", "algo-risk")].seen_at == 1009.0


def test_other_hosts_and_units_removed_from_the_config() -> None:
    live = Liveness("h1", silent_after=5.0)
    live.expect(["algo-fno", "algo-equity"], now=0.0)
    live.heard(beat("algo-fno", host="h2"), now=1.0, wall=1.0)  # another host's fno is another daemon
    live.heard(beat("algo-fno"), now=1.0, wall=1.0)
    live.heard(beat("algo-equity"), now=1.0, wall=1.0)
    live.expect(["algo-fno"], now=2.0)  # equity removed from the config: forgotten; h2's fno is not the config's
    assert sorted(live.peers) == [("h1", "algo-fno"), ("h2", "algo-fno")]
    assert not live.peers[("h2", "algo-fno")].expected
    assert [(c.peer.host, c.peer.unit) for c in live.check(now=7.0)] == [("h1", "algo-fno"), ("h2", "algo-fno")]


def test_other_hosts_units_are_expected_from_the_start_and_a_host_is_silent_when_all_its_units_are() -> None:
    live = Liveness("a", silent_after=5.0)
    live.expect(["algo-heartbeat"], now=0.0, others={"b": ["algo-risk", "algo-heartbeat"]})
    live.heard(beat("algo-heartbeat", host="a"), now=1.0, wall=1.0)
    live.heard(beat("algo-risk", host="b"), now=1.0, wall=1.0)
    assert live.hosts() == {"a": False, "b": False}
    changes = live.check(now=5.5)  # b's algo-heartbeat never came over the bridges
    assert [(c.peer.host, c.peer.unit, c.before) for c in changes] == [("b", "algo-heartbeat", State.WAITING)]
    assert live.hosts()["b"] is False  # its risk still heartbeats: the host is there, one daemon is not
    live.heard(beat("algo-heartbeat", host="a"), now=6.0, wall=6.0)
    assert [(c.peer.host, c.peer.unit) for c in live.check(now=6.5)] == [("b", "algo-risk")]
    assert live.hosts() == {"a": False, "b": True}
    live.heard(beat("algo-risk", host="b"), now=7.0, wall=7.0)
    assert live.hosts() == {"a": False, "b": False}


def test_a_host_or_unit_taken_out_of_the_config_is_forgotten_an_unnamed_host_stays() -> None:
    live = Liveness("a", silent_after=5.0)
    live.expect([], now=0.0, others={"b": ["algo-risk", "algo-execution"], "c": ["algo-fno"]})
    live.heard(beat("algo-journal", host="b"), now=1.0, wall=1.0)  # b's, not named: watched, not expected
    live.heard(beat("algo-fno", host="d"), now=1.0, wall=1.0)  # a host the config never named
    live.expect([], now=2.0, others={"b": ["algo-risk"]})
    assert sorted(live.peers) == [("b", "algo-risk"), ("d", "algo-fno")]
    assert live.peers[("b", "algo-risk")].expected and not live.peers[("d", "algo-fno")].expected


def test_other_hosts_need_this_host_named(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text('[daemons.heartbeat.hosts]\nb = ["algo-risk"]\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert [p.path for p in err.value.problems] == ["daemons.heartbeat.hosts"]
    path.write_text('[fleet]\nhost = "a"\n[daemons.heartbeat.hosts]\na = ["algo-risk"]\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert [p.path for p in err.value.problems] == ["daemons.heartbeat.hosts"]
    path.write_text('[fleet]\nhost = "a"\n[daemons.heartbeat.hosts]\nb = ["algo-risk", "algo-heartbeat"]\n')
    config = load_config(path)
    assert config.daemons.heartbeat.hosts == {"b": ["algo-risk", "algo-heartbeat"]}
    assert this_host(config) == "a"
    assert [bus_source(name, config) for name in ("heartbeat", "bridge", "risk")] == ["heartbeat@a", "bridge@a", "risk"]


def test_one_host_keeps_the_hostname_and_plain_source_names(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text("")
    config = load_config(path)
    assert this_host(config) == HOST
    assert [bus_source(name, config) for name in ("heartbeat", "bridge")] == ["heartbeat", "bridge"]


# --- real daemons on a real bus -----------------------------------------------------------------------

def scrape(port: int) -> dict[tuple[str, str], float]:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except urllib.error.URLError:
        return {}  # not serving yet
    series = re.finditer(r"^(algo_heartbeat_\w+)\{([^}]*)\} (\S+)$", body, re.MULTILINE)
    return {(m[1], m[2]): float(m[3]) for m in series}


def labels(unit: str) -> str:
    return f'host="{HOST}",unit="{unit}"'


@pytest.fixture
def small_fleet(tmp_path: Path) -> Iterator[tuple[list[subprocess.Popen[str]], int]]:
    """A private bus, algo-heartbeat and algo-journal as processes on free ports of their own; and
    algo-heartbeat's metrics port."""
    config = tmp_path / "fleet.toml"
    text = TEST_CONFIG.replace('"/run/algo/bus.sock"', f'"{tmp_path}/bus.sock"').replace(
        "silent_after_sec = 5.0", "silent_after_sec = 0.6")
    ports = dict(zip(("9470", "9471", "9478"), free_ports(3), strict=True))  # bus, heartbeat, journal
    for default, port in ports.items():
        text = text.replace(f"metrics_port = {default}", f"metrics_port = {port}")
    config.write_text(text)
    env = {**os.environ, "ALGO_CONFIG": str(config), "STATE_DIRECTORY": str(tmp_path / "state"),
           "ALGO_DAEMONS__JOURNAL__DIRECTORY": str(tmp_path / "journal")}
    env.pop("NOTIFY_SOCKET", None)
    procs = [subprocess.Popen([sys.executable, "-m", f"daemons.{name}"], env=env, stderr=subprocess.PIPE, text=True)
             for name in ("bus", "heartbeat", "journal")]
    try:
        yield procs, ports["9471"]
    finally:
        stop_all(procs, 10)


def test_every_daemon_heartbeats_and_a_stopped_one_is_flagged_silent(
        small_fleet: tuple[list[subprocess.Popen[str]], int]) -> None:
    (_, heartbeat, journal), port = small_fleet
    wait_until(lambda: {("algo_heartbeat_last_seen_timestamp_seconds", labels(unit))
                        for unit in ("algo-heartbeat", "algo-journal")} <= scrape(port).keys(), 15,
               "heartbeats from algo-heartbeat and algo-journal")
    seen = scrape(port)
    for unit in ("algo-heartbeat", "algo-journal"):
        assert seen[("algo_heartbeat_daemon_healthy", labels(unit))] == 1.0, unit
        assert ("algo_heartbeat_last_seen_timestamp_seconds", labels(unit)) in seen, unit
        assert 0 <= seen[("algo_heartbeat_loop_lag_seconds", labels(unit))] < 1, unit
    # expected by the config but never started: flagged once the limit has passed
    wait_until(lambda: scrape(port).get(("algo_heartbeat_silent", labels("algo-risk"))) == 1.0, 5, "risk silent")
    assert ("algo_heartbeat_last_seen_timestamp_seconds", labels("algo-risk")) not in scrape(port)

    journal.send_signal(signal.SIGSTOP)
    wait_until(lambda: scrape(port).get(("algo_heartbeat_silent", labels("algo-journal"))) == 1.0, 5,
               "algo-journal flagged silent")
    journal.send_signal(signal.SIGCONT)
    wait_until(lambda: scrape(port).get(("algo_heartbeat_silent", labels("algo-journal"))) == 0.0, 5,
               "algo-journal heartbeating again")
    assert scrape(port)[("algo_heartbeat_silent", labels("algo-heartbeat"))] == 0.0

    heartbeat.terminate()
    assert heartbeat.wait(10) == 0
    log = heartbeat.stderr.read() if heartbeat.stderr else ""
    never = r"^ERROR +algo\.heartbeat: algo-risk on \S+: no heartbeat since algo-heartbeat started"
    assert re.search(never, log, re.MULTILINE)
    silent = re.findall(r"^ERROR +algo\.heartbeat: algo-journal on \S+ silent: no heartbeat for [\d.]+s \(limit 0.6s\)"
                        r" DAEMON_UNIT=algo-journal DAEMON_HOST=\S+$", log, re.MULTILINE)
    assert len(silent) == 1, log  # one line per transition, not one per check
    assert re.search(r"^INFO +algo\.heartbeat: algo-journal on \S+ heartbeats again after [\d.]+s", log, re.MULTILINE)


def test_a_blind_watcher_flags_nobody_for_the_time_it_could_not_see() -> None:
    live = Liveness("h1", silent_after=5.0)
    live.expect(["algo-fno"], now=0.0)
    live.heard(beat("algo-fno"), now=1.0, wall=1.0)
    live.pardon(now=30.0)  # the bus was down from 1 to 30: algo-heartbeat heard nobody, itself included
    assert live.check(now=34.0) == []
    assert [c.peer.unit for c in live.check(now=35.5)] == ["algo-fno"]
