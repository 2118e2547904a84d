"""The pipeline bench's arithmetic on a hand-built journal: which stamps each hop is measured between,
percentiles by nearest rank, and tick losses net of conflation."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))  # bench/ is no package; bench/pipeline is (mypy's name: pipeline)

from pipeline.analysis import Samples, burst_places, counts, hop_samples, join, percentile, summary, tick_losses

MS = 1_000_000


def ev(kind: str, ts_ms: float, trace: str, id: str = "", **payload: Any) -> dict[str, Any]:
    return {"id": id or f"{kind}@{ts_ms}", "ts": int(ts_ms * MS), "type": kind, "trace": trace, "payload": payload}


def journal() -> list[dict[str, Any]]:
    """Two ticks: t1 causes an exit and an entry (two signals, one trace), t2 a signal that is blocked;
    a third tick before the window causes a signal that must not count. Listed out of order."""
    return [
        ev("execution.fill", 160, "t1", client_id="C-entry", fill_id="F1"),
        ev("execution.order", 108, "t1", client_id="C-entry", signal_id="s:entry", status="OPEN"),
        ev("execution.order", 107, "t1", client_id="C-exit", signal_id="s:exit", status="OPEN"),
        ev("execution.order", 150, "t1", client_id="C-exit", signal_id="s:exit", status="COMPLETE"),  # not the first
        ev("marketdata.tick", 100, "t1", id="t1") | {"seq": 4},
        ev("strategy.signal", 103, "t1", signal_id="s:exit", tick_ts=100 * MS),
        ev("strategy.signal", 104, "t1", signal_id="s:entry", tick_ts=100 * MS),
        ev("risk.approved", 105, "t1", signal_id="s:exit"),
        ev("risk.approved", 106, "t1", signal_id="s:entry"),
        ev("marketdata.tick", 200, "t2", id="t2") | {"seq": 6},
        ev("strategy.signal", 210, "t2", signal_id="s:late", tick_ts=200 * MS),
        ev("risk.blocked", 211, "t2", signal_id="s:late"),
        ev("marketdata.tick", 10, "t0", id="t0") | {"seq": 1},
        ev("strategy.signal", 12, "t0", signal_id="s:early", tick_ts=10 * MS),
    ]


def test_each_signal_is_followed_by_its_own_decision_first_order_and_fill() -> None:
    joined = join(journal(), start_ns=50 * MS, end_ns=300 * MS)
    assert joined.ticks == 2 and joined.ticks_missing == 0
    assert (joined.first_seq, joined.last_seq) == (4, 6)  # seq 5 never reached the journal: it still counts
    by_id = {c.signal_id: c for c in joined.chains}
    assert set(by_id) == {"s:exit", "s:entry", "s:late"}  # s:early's tick is before the window
    assert by_id["s:exit"].order == 107 * MS  # the first execution.order, not the COMPLETE update
    assert by_id["s:entry"].fill == 160 * MS and by_id["s:exit"].fill is None
    assert by_id["s:late"].blocked == 211 * MS and by_id["s:late"].approved is None

    ms = hop_samples(joined.chains)
    assert sorted(ms["tick->signal"]) == [3.0, 4.0, 10.0]
    assert sorted(ms["signal->approved"]) == [2.0, 2.0]
    assert ms["signal->blocked"] == [1.0]
    assert sorted(ms["approved->order"]) == [2.0, 2.0]
    assert sorted(ms["tick->order"]) == [7.0, 8.0]
    assert ms["order->fill"] == [52.0] and ms["tick->fill"] == [60.0]
    assert counts(joined.chains) == {"signals": 3, "approved": 2, "blocked": 1, "orders": 2, "fills": 1}


def test_a_tick_the_journal_lacks_is_timed_from_the_signals_copy_of_its_stamp() -> None:
    events = [e for e in journal() if e["id"] != "t2"]
    joined = join(events, start_ns=50 * MS, end_ns=300 * MS)
    assert joined.ticks_missing == 1
    late = next(c for c in joined.chains if c.signal_id == "s:late")
    assert late.tick == 200 * MS


def test_a_ticks_place_in_its_burst_counts_from_the_bursts_first_stamp() -> None:
    """Ticks stamped closer together than the gap are one burst, whatever order they are given in; a
    longer pause starts the next, numbered in stamp order."""
    stamps = [(100 * MS, 1), (int(100.2 * MS), 2), (int(101.5 * MS), 3), (600 * MS, 4), (int(600.1 * MS), 5)]
    places = burst_places(reversed(stamps), gap_ns=50 * MS)
    assert places == {1: (0, 0, 0), 2: (0, 1, int(0.2 * MS)), 3: (0, 2, int(1.5 * MS)),
                      4: (1, 0, 0), 5: (1, 1, int(0.1 * MS))}
    assert burst_places(stamps, gap_ns=1 * MS)[3] == (1, 0, 0)  # 1.3 ms after the one before: a burst of its own


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values[:10], 99) == 10.0  # with 10 samples p99 is the largest
    assert percentile([7.0], 50) == 7.0
    s = summary([3.0, 1.0, 2.0])
    assert s == {"n": 3, "p50": 2.0, "p99": 3.0, "max": 3.0}
    assert math.isnan(summary([])["p99"])


def scrape(*samples: tuple[str, float, dict[str, str]]) -> Samples:
    return {(name, tuple(sorted(labels.items()))): v for name, v, labels in samples}


def received(n: float) -> tuple[str, float, dict[str, str]]:
    return ("algo_bus_client_received_total", n, {})


def test_tick_losses_are_net_of_conflation() -> None:
    zero = {"bus": scrape(), "fno": scrape(), "risk": scrape()}
    after = {
        "bus": scrape(("algo_bus_published_total", 990, {"topic": "marketdata.tick"}),
                      ("algo_bus_dropped_total", 40, {"reason": "conflated"})),
        # fno: 950 ticks + 5 fills; the broker conflated 40 of its ticks
        "fno": scrape(received(955), ("algo_bus_client_gaps_total", 123, {})),
        # risk keeps the newest tick per key: 900 ticks + 10 other events received, 90 conflated by the client
        "risk": scrape(received(910), ("algo_bus_client_dropped_total", 90, {"reason": "conflated"})),
    }
    t = tick_losses(zero, after, published=1000, outbox_full=10, other_events={"fno": 5, "risk": 10}, journal_ticks=990)
    assert t["outbox_full"] == 10  # stamped by marketdata, dropped before the broker
    assert t["per_subscriber"]["fno"]["missing"] == 40
    assert t["per_subscriber"]["risk"]["missing"] == 0
    assert t["per_subscriber"]["fno"]["gaps"] == 123  # reported as read
    assert t["lost_beyond_policy"] == 10  # fno's 40 are the broker's conflation
    after["fno"] = scrape(received(935))  # 20 fewer than conflation explains
    assert tick_losses(zero, after, 1000, 10, {"fno": 5, "risk": 10}, 990)["lost_beyond_policy"] == 30
    # fno's key filter asked for 600 of the 990 (the other 390 were never due to it); the broker conflated 40
    after["bus"][("algo_bus_filtered_total", ())] = 390
    after["fno"] = scrape(received(565))
    t = tick_losses(zero, after, 1000, 10, {"fno": 5, "risk": 10}, 990)
    assert t["filtered"] == 390 and t["lost_beyond_policy"] == 10
    after["fno"] = scrape(received(555))  # 10 of the 600 it asked for neither arrived nor were conflated
    assert tick_losses(zero, after, 1000, 10, {"fno": 5, "risk": 10}, 990)["lost_beyond_policy"] == 20


@pytest.mark.parametrize("universe", [500, 9000])
def test_the_bench_universe_has_the_size_asked_for(universe: int, tmp_path: Any) -> None:
    from pipeline.fleet import derivative_strikes, instruments_dump

    from daemons.marketdata.instruments import load_instruments

    synthetic = instruments_dump(tmp_path / "bench.csv", universe)
    spots = load_instruments(tmp_path / "bench.csv")
    derivatives = 2 * (1 + 2 * (2 * derivative_strikes(universe) + 1))
    assert len(spots) + derivatives == universe
    assert len(synthetic) == len({s.symbol for s in spots}) - 6


def test_the_bench_waits_for_and_measures_every_service_of_algo_target_and_reports_only_its_daemons(tmp_path: Any) -> None:
    from pipeline.fleet import target_services

    services, daemons = target_services(REPO / "units")
    assert {"algo-commander.service", "algo-premarket.service", "algo-journal.service"} <= set(services)
    assert "commander" in daemons and "bus" in daemons and "premarket" not in daemons  # a oneshot has no RSS to report
    assert all(s.endswith(".service") for s in services)  # the socket and the timers are not waited for

    (tmp_path / "algo.target").write_text("[Unit]\nWants=algo-bus.socket algo-x.service\nWants=algo-y.service\n")
    (tmp_path / "algo-x.service").write_text("[Service]\nType=notify\n")
    (tmp_path / "algo-y.service").write_text("[Service]\nType=oneshot\n")
    assert target_services(tmp_path) == (("algo-x.service", "algo-y.service"), ("x",))


def test_the_bench_reads_each_daemons_memory_with_the_shared_pages_counted_once_in_pss_and_never_in_uss() -> None:
    from pipeline.analysis import memory_table
    from pipeline.fleet import memory_mb

    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        memory = memory_mb({"this": os.getpid(), "child": child.pid})
    finally:
        child.communicate(b"")
    for m in memory.values():  # the interpreter's binary and libraries are mapped by both, and by others
        assert 0 < m["uss"] < m["pss"] < m["rss"]
    line = memory_table([{"rate": 1000, "memory_mb": memory}], ["this", "child", "gone"]).splitlines()[-1]
    this, child_ = memory["this"], memory["child"]
    assert f"| {this['rss']:.1f} / {this['pss']:.1f} / {this['uss']:.1f} |" in line and line.count(" - ") == 1
    assert line.endswith(f"| {this['rss'] + child_['rss']:.0f} / {this['pss'] + child_['pss']:.0f} / "
                         f"{this['uss'] + child_['uss']:.0f} |")


def test_the_start_up_chain_is_read_from_systemd_timestamps_relative_to_the_first_start() -> None:
    from pipeline.analysis import startup_table
    from pipeline.fleet import start_up

    show = ("InactiveExitTimestampMonotonic=5000000\nActiveEnterTimestampMonotonic=5400000\n"
            "InactiveEnterTimestampMonotonic=0\nId=algo-journal.service\n\n"
            "Id=algo-risk.service\nInactiveExitTimestampMonotonic=5400500\nActiveEnterTimestampMonotonic=5900000\n"
            "InactiveEnterTimestampMonotonic=0\n\n"
            "Id=algo-premarket.service\nInactiveExitTimestampMonotonic=5010000\nActiveEnterTimestampMonotonic=0\n"
            "InactiveEnterTimestampMonotonic=5700000\n")  # a oneshot that is done (no RemainAfterExit): inactive again
    chain = start_up(show)
    assert chain == {"algo-journal.service": (0.0, 0.4), "algo-risk.service": (0.4005, 0.9),
                     "algo-premarket.service": (0.01, 0.7)}
    loads = [{"rate": 1000, "start_up": chain, "ready_s": 0.95, "cpus": 2, "start_cpu_s": {"journal": 0.42, "risk": 0.56}},
             {"rate": 5000, "start_up": {}}]
    table = startup_table(loads).splitlines()
    assert [line.split(" | ")[0] for line in table[4:7]] == ["| algo-journal.service", "| algo-premarket.service",
                                                            "| algo-risk.service"]  # in the order they were up
    assert table[4:] == [
        "| algo-journal.service | 0.00 -> 0.40 (0.42) | - |", "| algo-premarket.service | 0.01 -> 0.70 | - |",
        "| algo-risk.service | 0.40 -> 0.90 (0.56) | - |", "",
        "1,000: ready 0.95 s; the daemons had used 0.98 CPU s by then, so on 2 CPUs no order of starts is ready "
        "before 0.49 s"]


def test_the_cold_bench_times_each_call_alone_after_its_gap_slept_or_spun() -> None:
    import asyncio
    import time
    from itertools import pairwise

    from pipeline.cold import gap_costs

    calls: list[tuple[int, float]] = []

    def run(n: int) -> None:
        calls.append((n, time.monotonic()))
        if n % 2 == 0:
            time.sleep(0.003)  # every other call is slow: the median lies between, the gap is not in it

    started = time.monotonic()
    costs = asyncio.run(gap_costs(run, (("a", 0.0, False), ("b", 0.01, False), ("c", 0.01, True)), 4))
    assert list(costs) == ["a", "b", "c"] and [n for n, _ in calls] == list(range(1, 13))
    assert all(1000 <= us < 10_000 for us in costs.values()), costs  # ~1.5 ms: the median of 0 and 3 ms
    assert time.monotonic() - started >= 8 * 0.01  # the gaps were waited, sleeping and spinning
    assert all(b - a >= 0.01 for (_, a), (_, b) in pairwise(calls[4:]))


TIMEHIST = """\
           time    cpu  task name                       wait time  sch delay   run time
                        [tid/pid]                          (msec)     (msec)     (msec)
--------------- ------  ------------------------------  ---------  ---------  ---------
   60429.385816 [0000]  perf[20092]                         0.000      0.000      0.000
   60429.386104 [0001]  algo-fno[19225]                     0.000      0.004      0.130
   60429.386166 [0001]  algo-risk[300]                      0.130      0.200      0.061
   60429.386775 [0000]  algo-risk[301/300]                  0.000      9.000      0.789
   60429.386799 [0000]  algo-fno[19225]                     0.670      0.641      0.024
   60429.386913 [0000]  <idle>                              0.814      0.000      0.113
"""


def test_sched_delays_are_read_per_daemon_main_thread_and_other_threads_are_left_out() -> None:
    from pipeline.sched import delays

    got = delays(TIMEHIST, {19225: "fno", 300: "risk", 77: "bus"})
    assert (got["fno"]["n"], got["fno"]["p50"], got["fno"]["max"]) == (2, 0.004, 0.641)
    assert got["fno"]["run_ms"] == pytest.approx(0.154)
    assert (got["risk"]["n"], got["risk"]["max"]) == (1, 0.2)  # tid 301, a thread of risk's, is not its loop
    assert got["bus"]["n"] == 0 and math.isnan(got["bus"]["p50"])


def test_the_canary_names_the_worst_host_round_inside_each_slow_chain_and_keeps_stalled_chains_out_of_the_calm_p99() -> None:
    from pipeline.analysis import Chain
    from pipeline.canary import Rounds, report

    # Rounds every 5 ms from 100 ms; the one at 120 ms stalled 3.0 ms (round trip), the one at 140 ms woke 1.5 late.
    starts = [int((100 + 5 * i) * MS) for i in range(12)]
    rtts = [0.05] * 12
    lates = [0.1] * 12
    rtts[4], lates[8] = 3.0, 1.5
    rounds = Rounds(starts, lates, rtts)
    chains = [
        Chain("a", "t", tick=118 * MS, signal=119 * MS, approved=120 * MS, order=124 * MS),  # holds the 120 ms stall
        Chain("b", "t", tick=104 * MS, signal=105 * MS, approved=105 * MS, order=106 * MS),  # calm: the 105 ms round
        Chain("c", "t", tick=139 * MS, signal=140 * MS, approved=141 * MS, order=141 * MS + MS // 2),  # the late wake
        Chain("d", "t", tick=150 * MS, signal=151 * MS),  # never ordered: no span
    ]
    got = report(rounds, chains)
    assert (got["rounds"], got["stalls"]) == (12, 2)
    assert [(s["tick_to_order_ms"], s["canary_worst_ms"]) for s in got["slowest"]] == [(6.0, 3.0), (2.5, 1.5), (2.0, 0.1)]
    assert got["tick_to_order_calm_ms"]["n"] == 1 and got["tick_to_order_calm_ms"]["p99"] == 2.0


def test_the_canary_worker_records_a_round_per_slot_until_it_is_stopped(tmp_path: Any) -> None:
    import time

    from pipeline.canary import start, stop

    out = tmp_path / "canary.json"
    proc = start(out, interval=0.01)
    time.sleep(0.5)
    rounds = stop(proc, out)
    assert proc.returncode == 0
    assert 10 <= len(rounds.rtt_ms) <= 60  # ~50 slots of 10 ms; a loaded machine runs some late
    assert all(r > 0 for r in rounds.rtt_ms) and rounds.start_ns == sorted(rounds.start_ns)


@pytest.mark.parametrize(("asked", "runs"), [(375.0, 375.0), (None, 10.0)])
def test_the_bench_fleet_runs_the_session_clock_it_is_asked_for(asked: float | None, runs: float, tmp_path: Any) -> None:
    """375 minutes is real time: a minute's bars close once a minute, as in a market; paper.toml's 10 is kept
    only when asked for nothing (the multi-host bench)."""
    from pipeline.fleet import fleet_toml

    from daemons.runtime.config import load_config

    (tmp_path / "fleet.toml").write_text(fleet_toml(500, 2.0, ["SYN00001"], spread=True, session_minutes=asked))
    section = load_config(tmp_path / "fleet.toml").daemons.marketdata
    assert (section.session_minutes, section.steps_per_second, section.spread_steps) == (runs, 2.0, True)
