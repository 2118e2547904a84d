"""The pipeline bench's arithmetic, kept apart from the fleet it runs so a test can check it on a
hand-built journal: joining each signal to its tick, decision, first order and first fill;
percentiles; tick losses from metric scrapes; CPU and RSS per daemon; the Markdown table.

Hops are measured between the events' publish stamps (``ts``, wall-clock ns, taken by each
publisher's BusClient), joined the way ``algoctl trace`` joins them: a signal's ``trace`` is the id
of the tick that caused it, and the decision, order and fill carry the same trace. One tick can
cause several signals (an exit and an entry, or two strategies on one symbol), so within a trace
each signal is followed by its ``signal_id`` (orders and fills by the client id its order got).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TICK, SIGNAL, APPROVED, BLOCKED = "marketdata.tick", "strategy.signal", "risk.approved", "risk.blocked"
ORDER, FILL = "execution.order", "execution.fill"
HOPS = ("tick->signal", "signal->approved", "signal->blocked", "approved->order", "order->fill",
        "tick->order", "tick->fill")


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p% of the samples at or below it."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summary(values: Iterable[float]) -> dict[str, float]:
    """n, p50, p99 and max of a sample (ms in, ms out); NaN percentiles for an empty one."""
    s = sorted(values)
    return {"n": len(s), "p50": percentile(s, 50), "p99": percentile(s, 99), "max": s[-1] if s else math.nan}


@dataclass
class Chain:
    """One signal's path: the publish stamps (ns) of each hop it reached."""

    signal_id: str
    trace: str
    tick: int
    signal: int
    approved: int | None = None
    blocked: int | None = None
    order: int | None = None
    fill: int | None = None


@dataclass
class Joined:
    chains: list[Chain] = field(default_factory=list)
    ticks: int = 0  # tick events in the window
    first_seq: int = 0  # of those ticks: with last_seq, how many marketdata stamped (dropped ones included)
    last_seq: int = -1
    ticks_missing: int = 0  # signals whose tick is not in the journal (its stamp then comes from the signal)


def join(events: Iterable[Mapping[str, Any]], start_ns: int = 0, end_ns: int = 2**63) -> Joined:
    """Every signal whose tick was published in [start_ns, end_ns), with the first decision, first
    order and first fill that followed it. Order of ``events`` does not matter."""
    tick_ts: dict[str, int] = {}
    signals: list[Mapping[str, Any]] = []
    decided: dict[tuple[str, str], tuple[str, int]] = {}
    orders: dict[tuple[str, str], int] = {}
    client_of: dict[str, str] = {}  # client id -> signal id
    fills: dict[tuple[str, str], int] = {}
    out = Joined()
    for e in events:
        kind, ts, trace = e["type"], e["ts"], e.get("trace", "")
        if kind == TICK:
            tick_ts[e["id"]] = ts
            if start_ns <= ts < end_ns:
                out.ticks += 1
                seq = e.get("seq", 0)
                if out.ticks == 1 or seq < out.first_seq:
                    out.first_seq = seq
                out.last_seq = max(out.last_seq, seq)
        elif kind == SIGNAL:
            signals.append(e)
        elif kind in (APPROVED, BLOCKED):
            key = (trace, e["payload"].get("signal_id", ""))
            if key not in decided or ts < decided[key][1]:
                decided[key] = (kind, ts)
        elif kind == ORDER:
            p = e["payload"]
            client_of[p["client_id"]] = p.get("signal_id", "")
            key = (trace, p.get("signal_id", ""))
            orders[key] = min(ts, orders.get(key, ts))
        elif kind == FILL:
            key = (trace, e["payload"].get("client_id", ""))
            fills[key] = min(ts, fills.get(key, ts))
    fill_of_signal = {(trace, client_of[cid]): ts for (trace, cid), ts in fills.items() if cid in client_of}
    for s in signals:
        trace, sid = s["trace"], s["payload"]["signal_id"]
        tick = tick_ts.get(trace)
        if tick is None:
            out.ticks_missing += 1
            tick = int(s["payload"].get("tick_ts", s["ts"]))
        if not start_ns <= tick < end_ns:
            continue
        c = Chain(sid, trace, tick, s["ts"])
        if (trace, sid) in decided:
            kind, ts = decided[(trace, sid)]
            if kind == APPROVED:
                c.approved = ts
            else:
                c.blocked = ts
        c.order = orders.get((trace, sid))
        c.fill = fill_of_signal.get((trace, sid))
        out.chains.append(c)
    return out


def hop_samples(chains: Iterable[Chain]) -> dict[str, list[float]]:
    """Milliseconds per hop; a chain contributes to each hop it completed."""
    out: dict[str, list[float]] = {h: [] for h in HOPS}

    def add(hop: str, a: int | None, b: int | None) -> None:
        if a is not None and b is not None:
            out[hop].append((b - a) / 1e6)

    for c in chains:
        add("tick->signal", c.tick, c.signal)
        add("signal->approved", c.signal, c.approved)
        add("signal->blocked", c.signal, c.blocked)
        add("approved->order", c.approved, c.order)
        add("order->fill", c.order, c.fill)
        add("tick->order", c.tick, c.order)
        add("tick->fill", c.tick, c.fill)
    return out


BURST_GAP_NS = 50_000_000  # a tick stamped this long after the one before starts a new burst (a step)


def burst_places(stamps: Iterable[tuple[int, int]], gap_ns: int = BURST_GAP_NS) -> dict[int, tuple[int, int, int]]:
    """Each tick's place in its burst: ``(ts, seq)`` of the window's ticks -> ``seq: (burst, place, offset_ns)``,
    bursts numbered from 0 in stamp order, place 0 for a burst's first tick, the offset from that tick's
    stamp. A burst is a run of ticks stamped less than ``gap_ns`` apart (a step the feed publishes back to back)."""
    out: dict[int, tuple[int, int, int]] = {}
    burst, first, previous, place = -1, 0, -gap_ns, 0
    for ts, seq in sorted(stamps):
        if ts - previous >= gap_ns:
            burst, first, place = burst + 1, ts, 0
        out[seq] = (burst, place, ts - first)
        previous, place = ts, place + 1
    return out


# ---- metrics ------------------------------------------------------------------------------------
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]  # (name, sorted labels) -> value


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def tick_losses(before: Mapping[str, Samples], after: Mapping[str, Samples], published: int, outbox_full: float,
                other_events: Mapping[str, int], journal_ticks: int) -> dict[str, Any]:
    """Where the ticks of a window went. ``before``/``after`` (daemon -> scrape) were read while the
    feed was paused and every queue had drained, so no tick was in flight at either end; ``published``
    is how many ticks marketdata stamped in the window (the span of their sequence numbers, which are
    given before a tick can be dropped for a full outbox); ``outbox_full`` the ticks marketdata's
    client dropped in it. (published - into the bus is not the loss: the paused feed may still hold a
    few stamped ticks in its outbox, which reach the broker when it resumes.)

    ``other_events``: per subscribing daemon, the events of its other topics published in the window
    (counted in the journal), so ``algo_bus_client_received_total`` minus them is the ticks it got.
    The conflation policy allows two losses: the broker conflating market data for a subscriber whose
    socket has not drained (``algo_bus_dropped_total{reason="conflated"}``, not split by subscriber) and
    a client keeping only the newest tick per key (``algo_bus_client_dropped_total{reason="conflated"}``:
    a ``latest_only`` handler, or a daemon too far behind). Ticks a subscriber's key filter did not ask
    for (``algo_bus_filtered_total``) were never due to it. Anything else is lost beyond the policy:
    ticks that never reached the broker (marketdata's outbox full) and ticks a subscriber neither
    received nor had conflated. ``algo_bus_client_gaps_total`` is reported as read.
    """
    into_bus = delta(before["bus"], after["bus"], "algo_bus_published_total", topic=TICK)
    broker_conflated = delta(before["bus"], after["bus"], "algo_bus_dropped_total", reason="conflated")
    filtered = delta(before["bus"], after["bus"], "algo_bus_filtered_total")
    broker_other = sum(delta(before["bus"], after["bus"], "algo_bus_dropped_total", reason=r)
                       for r in ("slow_consumer", "disconnected"))
    per: dict[str, dict[str, float]] = {}
    for d, other in other_events.items():
        received = delta(before[d], after[d], "algo_bus_client_received_total") - other
        conflated = delta(before[d], after[d], "algo_bus_client_dropped_total", reason="conflated")
        per[d] = {"received": received, "conflated": conflated, "missing": into_bus - received - conflated,
                  "gaps": delta(before[d], after[d], "algo_bus_client_gaps_total"),
                  "reconnects": delta(before[d], after[d], "algo_bus_client_reconnects_total")}
    missing = sum(max(0.0, p["missing"]) for p in per.values())
    return {"published": float(published), "into_bus": into_bus, "outbox_full": outbox_full,
            "broker_conflated": broker_conflated, "broker_dropped_other": broker_other, "filtered": filtered,
            "client_conflated": sum(p["conflated"] for p in per.values()), "journal_ticks": journal_ticks,
            "lost_beyond_policy": outbox_full + max(0.0, missing - broker_conflated - filtered), "per_subscriber": per}


def relay_losses(before: Mapping[str, Samples], after: Mapping[str, Samples], sender: str, receiver: str,
                 bridges: Sequence[str]) -> dict[str, float]:
    """Ticks between two hosts' brokers (``sender``'s and ``receiver``'s scrapes, read paused and drained like
    tick_losses'): those routed on the sending host, those the receiving host's bridge published there, and
    those the ``bridges`` conflated to the newest of their key on the way (the local bus's policy, kept
    across hosts). The rest is lost: trimmed from the stream unread, or never handed over."""
    sent = delta(before[sender], after[sender], "algo_bus_published_total", topic=TICK)
    arrived = delta(before[receiver], after[receiver], "algo_bus_published_total", topic=TICK)
    conflated = sum(delta(before[b], after[b], "algo_bridge_dropped_total", reason="conflated") for b in bridges)
    return {"sent": sent, "arrived": arrived, "conflated": conflated, "lost": max(0.0, sent - arrived - conflated)}


def histogram_between(before: Samples, after: Samples, name: str, **labels: str) -> dict[str, float]:
    """A Prometheus histogram's observations (those with ``labels``) between two scrapes: n, mean, and p50 /
    p99 as the upper bound of the bucket they fall in (what the buckets allow; NaN when nothing was observed)."""
    n = delta(before, after, f"{name}_count", **labels)
    bounds = sorted({float(dict(ls)["le"]) for (m, ls) in after if m == f"{name}_bucket"})
    cumulative = [(le, delta(before, after, f"{name}_bucket", le=_le(le), **labels)) for le in bounds]

    def quantile(q: float) -> float:
        return next((le for le, c in cumulative if n and c >= q * n), math.nan)
    return {"n": n, "mean": delta(before, after, f"{name}_sum", **labels) / n if n else math.nan, "p50": quantile(0.5),
            "p99": quantile(0.99)}


def _le(bound: float) -> str:
    """A bucket's label as prometheus_client writes it."""
    return "+Inf" if math.isinf(bound) else repr(bound)


def cpu_per_kticks(cpu_before: Mapping[str, float], cpu_after: Mapping[str, float], ticks: float) -> dict[str, float]:
    """CPU ms each daemon spent per 1,000 ticks published (CPU seconds in, ms out)."""
    if ticks <= 0:
        return {d: math.nan for d in cpu_after}
    return {d: (cpu_after[d] - cpu_before.get(d, 0.0)) * 1e3 / (ticks / 1e3) for d in cpu_after}


# ---- reporting ----------------------------------------------------------------------------------
def fmt_ms(x: float) -> str:
    if math.isnan(x):
        return "-"
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def load_label(load: Mapping[str, Any]) -> str:
    """A table row's load: its rate, and its setup when a bench compares several (bench/multihost)."""
    return f"{load['rate']:,}" + (f" {load['setup']}" if "setup" in load else "")


def latency_table(loads: Sequence[Mapping[str, Any]], hops: Sequence[str] = HOPS) -> str:
    """One row per load and hop: n, p50, p99, max (ms)."""
    lines = ["| ticks/s requested | achieved | universe | hop | n | p50 ms | p99 ms | max ms |",
             "|---|---:|---:|---|---:|---:|---:|---:|"]
    for load in loads:
        for hop in hops:
            s = load["latency_ms"][hop]
            lines.append(f"| {load_label(load)} | {load['achieved']:,.0f} | {load['universe']:,} | {hop} | {s['n']} | "
                         f"{fmt_ms(s['p50'])} | {fmt_ms(s['p99'])} | {fmt_ms(s['max'])} |")
    return "\n".join(lines)


def resource_table(loads: Sequence[Mapping[str, Any]], daemons: Sequence[str]) -> str:
    """CPU ms per 1k ticks and VmRSS MB per daemon, one row per load; then ready time and tick losses."""
    head = "| ticks/s | " + " | ".join(daemons) + " |"
    lines = ["CPU ms per 1,000 ticks published (VmRSS MB at the end of the window)", "", head,
             "|---|" + "---:|" * len(daemons)]
    for load in loads:
        cells = [f"{fmt_ms(load['cpu_ms_per_kticks'][d])} ({load['rss_mb'].get(d, math.nan):.1f})"
                 if d in load["cpu_ms_per_kticks"] else "-" for d in daemons]
        lines.append(f"| {load_label(load)} | " + " | ".join(cells) + " |")
    lines += ["", "| ticks/s | ready s | ticks published | journal ticks | conflated (broker / clients) | "
                  "not asked for (key filters) | lost beyond policy | signals | approved | blocked | orders | fills | "
                  "throttled |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for load in loads:
        t, c = load["ticks"], load["counts"]
        lines.append(f"| {load_label(load)} | {load['ready_s']:.2f} | {t['published']:,.0f} | {t['journal_ticks']:,} | "
                     f"{t['broker_conflated']:,.0f} / {t['client_conflated']:,.0f} | {t.get('filtered', 0):,.0f} | "
                     f"{t['lost_beyond_policy']:,.0f} | "
                     f"{c['signals']} | {c['approved']} | {c['blocked']} | {c['orders']} | {c['fills']} | "
                     f"{load['throttled']:.0f} |")
    return "\n".join(lines)


def startup_table(loads: Sequence[Mapping[str, Any]]) -> str:
    """When each service started and was up (seconds after the first start), in the order they were up: the
    units' ordering (``After=``) makes ready a chain of starts. With each daemon, the CPU its process had used
    when the fleet was ready; their sum over the machine's CPUs is the shortest start that CPU allows, whatever
    the order (algo-premarket, a oneshot gone by then, is not in it)."""
    first = loads[0]["start_up"]
    head = "| service | " + " | ".join(load_label(load) for load in loads) + " |"
    lines = ["Start-up, s after `systemctl start algo.target`: started -> up (the daemon's CPU s by ready)", "",
             head, "|---|" + "---:|" * len(loads)]
    for unit in sorted(first, key=lambda u: first[u][1]):
        daemon = unit.removeprefix("algo-").removesuffix(".service")
        cells = [f"{s[0]:.2f} -> {s[1]:.2f}{_cpu(load, daemon)}" if (s := load["start_up"].get(unit)) else "-"
                 for load in loads]
        lines.append(f"| {unit} | " + " | ".join(cells) + " |")
    floors = [f"{load_label(load)}: ready {load['ready_s']:.2f} s; the daemons had used {sum(cpu.values()):.2f} CPU s "
              f"by then, so on {load['cpus']} CPUs no order of starts is ready before "
              f"{sum(cpu.values()) / load['cpus']:.2f} s"
              for load in loads if (cpu := load.get("start_cpu_s")) and load.get("cpus")]
    return "\n".join([*lines, "", *floors] if floors else lines)


def _cpu(load: Mapping[str, Any], daemon: str) -> str:
    cpu = (load.get("start_cpu_s") or {}).get(daemon)
    return f" ({cpu:.2f})" if cpu is not None else ""


def memory_table(loads: Sequence[Mapping[str, Any]], daemons: Sequence[str]) -> str:
    """VmRSS / PSS / USS MB per daemon at the end of each window, and the fleet's sums: RSS counts the shared
    interpreter and libraries once per daemon, PSS shares them out (its sum is what the fleet takes)."""
    head = "| ticks/s | " + " | ".join(daemons) + " | fleet |"
    lines = ["Memory MB at the end of the window: VmRSS / PSS / USS", "", head, "|---|" + "---:|" * (len(daemons) + 1)]
    for load in loads:
        memory = load.get("memory_mb") or {}
        cells = [f"{m['rss']:.1f} / {m['pss']:.1f} / {m['uss']:.1f}" if (m := memory.get(d)) else "-" for d in daemons]
        mine = [memory[d] for d in daemons if d in memory]
        cells.append(f"{sum(m['rss'] for m in mine):.0f} / {sum(m['pss'] for m in mine):.0f} / "
                     f"{sum(m['uss'] for m in mine):.0f}")
        lines.append(f"| {load_label(load)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def counts(chains: Sequence[Chain]) -> dict[str, int]:
    return {"signals": len(chains), "approved": sum(c.approved is not None for c in chains),
            "blocked": sum(c.blocked is not None for c in chains), "orders": sum(c.order is not None for c in chains),
            "fills": sum(c.fill is not None for c in chains)}
