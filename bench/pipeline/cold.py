"""What a quiet gap costs the order path's Python: a handler warm, and after the host has had its caches.

    .venv/bin/python bench/pipeline/cold.py [--rounds 60]

At 1k ticks/s an order-path daemon handles an event every few milliseconds at most, and most of a hop's
time is its handlers, not the kernel's wake-ups (README, round 10). This runs two of those handlers in
one process, back to back and after gaps of 1, 10 and 100 ms in which the process either sleeps (as a
daemon waits in epoll) or spins on a loop that touches no memory:

- algo-risk's real signal handler (``RiskDaemon._on_signal`` on the paper config, a temporary state
  directory, its bus without a broker): the signal checked, approved, the approval stamped and queued;
- the bus client's decode and dispatch of one ``risk.approved`` frame (``BusClient._deliver``).

If a C compiler (``cc``) is there, a pointer chase through 256 KiB (it fits any L2 here) does the same
without Python. A handler that is as slow after a spin as after a sleep lost its caches to the host (the
hypervisor, its other guests), not to an idle state or to its own process's other work. Prints the
median of ``--rounds`` per gap, in µs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import date, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

GAPS: tuple[tuple[str, float, bool], ...] = (
    ("back to back", 0.0, False), ("sleep 1 ms", 0.001, False), ("sleep 10 ms", 0.01, False),
    ("sleep 100 ms", 0.1, False), ("spin 10 ms", 0.01, True), ("spin 100 ms", 0.1, True))
WALK = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#define N (256 * 1024 / 8)
static size_t next[N];
static long long ns(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000000000LL + t.tv_nsec; }
int main(int argc, char **argv) {
    long long gap = atoll(argv[1]); int spin = atoi(argv[2]), rounds = atoi(argv[3]); size_t p = 0;
    for (size_t i = 0; i < N; i++) next[i] = i;
    srand(1);
    for (size_t i = N - 1; i > 0; i--) { size_t j = rand() % (i + 1), t = next[i]; next[i] = next[j]; next[j] = t; }
    for (int r = 0; r < rounds; r++) {
        if (gap && spin) { long long end = ns() + gap; while (ns() < end) {} }
        else if (gap) { struct timespec t = {gap / 1000000000LL, gap % 1000000000LL}; nanosleep(&t, 0); }
        long long t0 = ns();
        for (size_t k = 0; k < N / 4; k++) p = next[p];
        printf("%lld\n", ns() - t0);
    }
    return p == 12345678;
}
"""


async def gap_costs(run: Callable[[int], object], gaps: Sequence[tuple[str, float, bool]], rounds: int) -> dict[str, float]:
    """Median µs of ``run(n)`` per gap (label, seconds, spin?), each timed alone after its gap; what it
    leaves for the loop (log lines, writes) runs after the timing, as in a daemon."""
    out: dict[str, float] = {}
    n = 0
    for label, gap, spin in gaps:
        took = []
        for _ in range(rounds):
            if spin:
                end = time.perf_counter() + gap
                while time.perf_counter() < end:
                    pass
            else:
                await asyncio.sleep(gap)
            n += 1
            started = time.perf_counter_ns()
            run(n)
            took.append(time.perf_counter_ns() - started)
            await asyncio.sleep(0)
        out[label] = statistics.median(took) / 1000
    return out


def risk_signal() -> tuple[Callable[[int], object], Callable[[], float]]:
    """RiskDaemon._on_signal on the rehearsals' made-up signals (runtime/rehearsal.py), which it approves; and
    how many it approved."""
    from daemons.risk.main import RiskDaemon
    from daemons.risk.rules import RateLimiter
    from daemons.runtime.calendar import IST, last_trading_day
    from daemons.runtime.config import load_config
    from daemons.runtime.envelope import STRATEGY_SIGNAL, Event
    from daemons.runtime.metrics import DaemonMetrics
    from daemons.runtime.rehearsal import made_up_signal

    os.environ["STATE_DIRECTORY"] = tempfile.mkdtemp(prefix="cold-risk-")
    risk = RiskDaemon(load_config(Path(__file__).resolve().parents[2] / "configs" / "paper.toml"), DaemonMetrics("risk"))
    day = last_trading_day(datetime.now(IST).date(), risk.config.market.holidays)
    at = int(datetime(day.year, day.month, day.day, 10, 0, tzinfo=IST).timestamp()) * 1_000_000_000
    risk.rules.rate = RateLimiter(1e9)  # a signal every round, never rate-limited

    def run(n: int) -> None:
        payload = made_up_signal(n, day, at + n)  # in and out of one share: no position limit is reached
        risk._on_signal(Event(STRATEGY_SIGNAL, "equity", n, payload, f"s{n}", time.time_ns(), f"s{n}"))

    approved = risk.decisions.labels("approved")
    return run, lambda: approved._value.get()


def deliver_approval() -> Callable[[int], object]:
    """BusClient._deliver of one risk.approved frame to a handler that keeps nothing."""
    from daemons.runtime import wire
    from daemons.runtime.client import BusClient
    from daemons.runtime.envelope import RISK_APPROVED, EventFactory
    from daemons.runtime.rehearsal import SYMBOL, made_up_signal
    from daemons.runtime.transport import UnixTransport

    never = UnixTransport("/unused", b"", max_frame=1 << 20, buffer_bytes=1 << 20, reconnect_min=0.1, reconnect_max=1.0,
                          resubscribe=list)
    client = BusClient(never, "execution")  # never started: _deliver needs no connection
    client.subscribe(RISK_APPROVED, lambda event: None)
    factory = EventFactory("risk")
    payload = made_up_signal(1, date(2026, 1, 1), time.time_ns())
    frames = []
    for _ in range(len(GAPS) * 1000):
        _, body = factory.stamp(RISK_APPROVED, payload, None, SYMBOL)
        frames.append(wire.encode(wire.PUBLISH, RISK_APPROVED.encode(), body, SYMBOL.encode()))

    def run(n: int) -> None:
        data = frames[n % len(frames)]
        client._deliver(data, wire.scan(data, 1 << 20)[0], 1)

    return run


def c_walk(gaps: Sequence[tuple[str, float, bool]], rounds: int) -> dict[str, float] | None:
    """The pointer chase's median µs per gap, or None without a C compiler."""
    cc = shutil.which("cc")
    if cc is None:
        return None
    with tempfile.TemporaryDirectory(prefix="cold-walk-") as tmp:
        src, exe = Path(tmp) / "walk.c", Path(tmp) / "walk"
        src.write_text(WALK)
        subprocess.run([cc, "-O2", "-o", str(exe), str(src)], check=True)
        out = {}
        for label, gap, spin in gaps:
            lines = subprocess.run([str(exe), str(int(gap * 1e9)), str(int(spin)), str(rounds)], capture_output=True,
                                   text=True, check=False).stdout.split()
            out[label] = statistics.median(int(x) for x in lines) / 1000
        return out


async def main(rounds: int) -> None:
    logging.basicConfig(level=logging.INFO, handlers=[logging.NullHandler()])  # lines made, as in the fleet, not written
    signal, approvals = risk_signal()
    rows = {"risk: _on_signal, approved and published": await gap_costs(signal, GAPS, rounds)}
    assert approvals() >= len(GAPS) * rounds, f"only {approvals():.0f} approved: the bench must time approvals"
    rows["bus client: one approval decoded, dispatched"] = await gap_costs(deliver_approval(), GAPS, rounds)
    walk = c_walk(GAPS, rounds)
    if walk is not None:
        rows["C: 8,192 dependent loads in 256 KiB"] = walk
    print("| median µs | " + " | ".join(label for label, _, _ in GAPS) + " |")
    print("|---|" + "---:|" * len(GAPS))
    for name, costs in rows.items():
        print(f"| {name} | " + " | ".join(f"{costs[label]:.1f}" for label, _, _ in GAPS) + " |")
    if walk is None:
        print("(no cc: the C pointer chase was left out)")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=60, help="timed calls per gap")
    asyncio.run(main(p.parse_args().rounds))
