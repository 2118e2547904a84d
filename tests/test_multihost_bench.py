"""The multi-host bench's arithmetic (ticks across the bridges, the bridges' lag histogram, the two hosts'
losses added up) and its simulated hosts: made with their addresses, read from inside, and gone again
when the body fails."""

from __future__ import annotations

import math
import os
import shutil
import socket
import sys

import pytest

from tests.conftest import REPO
from tests.helpers import unavailable

sys.path.insert(0, str(REPO / "bench"))  # bench/ is no package; bench/multihost is (mypy's name: multihost)

from multihost.net import Topology
from multihost.run import losses
from pipeline.analysis import TICK, Samples, histogram_between, relay_losses
from pipeline.fleet import Window


def scrape(*samples: tuple[str, float, dict[str, str]]) -> Samples:
    return {(name, tuple(sorted(labels.items()))): v for name, v, labels in samples}


def ticks_routed(n: float) -> tuple[str, float, dict[str, str]]:
    return ("algo_bus_published_total", n, {"topic": TICK})


def conflated(n: float) -> tuple[str, float, dict[str, str]]:
    return ("algo_bridge_dropped_total", n, {"reason": "conflated"})


def test_ticks_between_hosts_are_lost_only_beyond_the_bridges_conflation() -> None:
    before = {"bus@a": scrape(ticks_routed(100)), "bus@b": scrape(ticks_routed(50)), "bridge@a": scrape(),
              "bridge@b": scrape(conflated(5))}
    after = {"bus@a": scrape(ticks_routed(1100)), "bus@b": scrape(ticks_routed(950)), "bridge@a": scrape(conflated(20)),
             "bridge@b": scrape(conflated(75))}
    r = relay_losses(before, after, "bus@a", "bus@b", ("bridge@a", "bridge@b"))
    assert (r["sent"], r["arrived"], r["conflated"]) == (1000, 900, 90)
    assert r["lost"] == 10  # trimmed unread or never handed over
    after["bridge@b"] = scrape(conflated(95))  # all of the 100 conflated: nothing lost
    assert relay_losses(before, after, "bus@a", "bus@b", ("bridge@a", "bridge@b"))["lost"] == 0


def lag(counts: dict[str, float], total: float) -> Samples:
    """algo_bridge_lag_seconds as the exporter writes it: cumulative buckets, _count and _sum."""
    name = "algo_bridge_lag_seconds"
    return scrape(*[(f"{name}_bucket", n, {"le": le}) for le, n in counts.items()],
                  (f"{name}_count", counts["+Inf"], {}), (f"{name}_sum", total, {}))


def test_the_lag_histogram_between_two_scrapes_gives_its_mean_and_bucket_bound_percentiles() -> None:
    before = lag({"0.001": 10, "0.005": 10, "0.025": 10, "+Inf": 10}, 0.005)
    after = lag({"0.001": 40, "0.005": 100, "0.025": 109, "+Inf": 110}, 0.405)
    h = histogram_between(before, after, "algo_bridge_lag_seconds")
    assert h["n"] == 100 and h["mean"] == pytest.approx(0.004)
    assert (h["p50"], h["p99"]) == (0.005, 0.025)  # 30 under 1 ms, 90 under 5: the median is in the 5 ms bucket
    assert math.isnan(histogram_between(after, after, "algo_bridge_lag_seconds")["p50"])


def test_two_hosts_losses_add_each_host_s_and_the_crossing() -> None:
    def received(n: float) -> Samples:
        return scrape(("algo_bus_client_received_total", n, {}))
    zero = {d: scrape() for d in ("bus@a", "bus@b", "bridge@a", "bridge@b", "risk", "execution", "journal", "fno",
                                  "equity", "options")}
    after = {**zero, "bus@a": scrape(ticks_routed(1000)), "bus@b": scrape(ticks_routed(980)),
             "bridge@b": scrape(conflated(15)), "risk": received(1000), "execution": received(1000),
             "journal": received(999), "fno": received(980), "equity": received(980), "options": received(978)}
    t = losses("2hosts", zero, after, 1000, 3, Window(0, 1))
    assert t["relay"]["lost"] == 5  # 1000 routed on a, 980 published on b, 15 conflated by b's bridge
    assert t["per_subscriber"]["journal"]["missing"] == 1 and t["per_subscriber"]["options"]["missing"] == 2
    assert t["lost_beyond_policy"] == 3 + 1 + 2 + 5  # a's outbox, the journal's, options', the crossing
    assert t["broker_conflated"] == 15


def _root_and_iproute() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nsenter") is None:
        unavailable("simulated hosts", "network namespaces need root, iproute2 and util-linux")


def test_simulated_hosts_have_their_addresses_and_nothing_is_left_when_the_run_fails() -> None:
    _root_and_iproute()
    topo = Topology("xbtest", "10.251.9", ("r", "h"))  # not the bench's own names: a bench may be running

    def bind_h_address() -> str:
        with socket.socket() as s:
            s.bind((topo.address("h"), 0))  # only inside h's namespace is the address local
            return str(s.getsockname()[0])

    with pytest.raises(RuntimeError, match="the run failed"), topo:
        assert set(topo.leftovers()) == {"xbtest-r", "xbtest-h", "xbtest0"}  # namespaces, veths, the bridge
        assert topo.reader("h").call(bind_h_address) == "10.251.9.11"
        with pytest.raises(OSError), socket.socket() as s:
            s.bind(("10.251.9.11", 0))  # not from the bench's own namespace
        server = topo.reader("r").call(lambda: socket.create_server((topo.address("r"), 0)))
        with server:
            port = server.getsockname()[1]
            topo.reader("h").call(lambda: socket.create_connection((topo.address("r"), port), timeout=5).close())
        raise RuntimeError("the run failed")
    assert topo.leftovers() == []
