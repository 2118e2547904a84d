"""What the host alone does to a hop: a canary beside the fleet, measured in the same window.

Two bare Python processes, no asyncio and no fleet code, ping-pong one byte over an AF_UNIX socket pair
every ``interval`` seconds: the parent sleeps to the next slot, stamps the wall clock, writes, and waits
for the echo. Each round records when it started, how late the parent woke for its slot, and the round
trip (two cross-process wake-ups: what every bus hop pays at least). On an idle 2-vCPU VM a round trip is
~40-70 µs; a round of milliseconds is the host (the hypervisor taking the vCPU, or every CPU busy), and a
slow fleet chain that overlaps one is not the fleet's code.

``start`` runs it as a child of the bench; ``stop`` ends it and reads what it recorded; ``overlaps``
finds the rounds inside a chain's span (analysis.py joins the chains).

    .venv/bin/python bench/pipeline/canary.py OUT.json 0.005   # the worker, as ``start`` runs it
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run as a script from anywhere (start() does): bench/ on the path, as run.py puts it
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.analysis import Chain, summary

STALL_MS = 1.0  # a round (lateness or round trip) this slow is the host's, not a hop's ordinary cost


@dataclass
class Rounds:
    """What one canary recorded: per round its start (wall-clock ns), lateness and round trip (ms)."""

    start_ns: list[int]
    late_ms: list[float]
    rtt_ms: list[float]

    def worst(self, since_ns: int, until_ns: int) -> float:
        """The slowest lateness or round trip of the rounds that started in [since_ns, until_ns], in ms
        (0 if none did): what the host did to any process while a chain was on its way."""
        first, stop = bisect_left(self.start_ns, since_ns), bisect_right(self.start_ns, until_ns)  # rounds are in order
        return max(self.late_ms[first:stop] + self.rtt_ms[first:stop], default=0.0)

    def stalls(self, threshold_ms: float = STALL_MS) -> int:
        return sum(1 for late, rtt in zip(self.late_ms, self.rtt_ms, strict=True) if max(late, rtt) >= threshold_ms)


def start(out: Path, interval: float = 0.005) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, str(out), str(interval)])


def stop(proc: subprocess.Popen[bytes], out: Path) -> Rounds:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    data = json.loads(out.read_text())
    return Rounds(data["start_ns"], data["late_ms"], data["rtt_ms"])


def overlaps(rounds: Rounds, spans: Sequence[tuple[int, int]], margin_ns: int = 0) -> list[float]:
    """For each (start, end) span in ns, the canary's worst round within it (widened by ``margin_ns``)."""
    return [rounds.worst(a - margin_ns, b + margin_ns) for a, b in spans]


def report(rounds: Rounds, chains: Sequence[Chain], slowest: int = 10) -> dict[str, Any]:
    """The canary's own round trips and lateness, and the host beside the fleet's chains: the worst canary
    round within each of the ``slowest`` tick -> order chains, and tick -> order of the chains that met no
    stall (a Chain's stamps are the journal's publish stamps, the canary's are the same wall clock)."""
    done = sorted((c for c in chains if c.order is not None), key=lambda c: c.tick - (c.order or 0))
    worst = overlaps(rounds, [(c.tick, c.order or c.tick) for c in done])
    calm = [((c.order or 0) - c.tick) / 1e6 for c, w in zip(done, worst, strict=True) if w < STALL_MS]
    return {
        "rounds": len(rounds.rtt_ms), "stalls": rounds.stalls(),
        "rtt_ms": summary(rounds.rtt_ms), "late_ms": summary(rounds.late_ms),
        "slowest": [{"tick_to_order_ms": ((c.order or 0) - c.tick) / 1e6, "canary_worst_ms": w}
                    for c, w in zip(done[:slowest], worst[:slowest], strict=True)],
        "tick_to_order_calm_ms": summary(calm),
    }


def table(loads: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table per load: the canary's rounds, and its worst round beside each slowest chain."""
    out = ["| ticks/s | canary rtt p50 / p99 / max ms | late p99 / max ms | stalls >= 1 ms | slowest chains: "
           "tick -> order ms (canary's worst round within) | tick -> order p99 of chains without a stall |",
           "|---:|---:|---:|---:|---|---:|"]
    for load in loads:
        c = load.get("canary")
        if not isinstance(c, dict):
            continue
        rtt, late, calm = c["rtt_ms"], c["late_ms"], c["tick_to_order_calm_ms"]
        slow = ", ".join(f"{s['tick_to_order_ms']:.2f} ({s['canary_worst_ms']:.2f})" for s in c["slowest"][:6])
        out.append(f"| {load['rate']:,} | {rtt['p50']:.3f} / {rtt['p99']:.3f} / {rtt['max']:.2f} | "
                   f"{late['p99']:.3f} / {late['max']:.2f} | {c['stalls']} of {c['rounds']} | {slow} | "
                   f"{calm['p99']:.2f} (n {calm['n']:.0f}) |")
    return "\n".join(out)


def _worker(out: Path, interval: float) -> None:
    ping, echo = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    if os.fork() == 0:
        ping.close()
        while data := echo.recv(1):
            echo.send(data)
        os._exit(0)
    echo.close()
    stopping = False

    def on_term(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    starts: list[int] = []
    lates: list[float] = []
    rtts: list[float] = []
    step = int(interval * 1e9)
    due = time.monotonic_ns() + step
    while not stopping:
        wait = due - time.monotonic_ns()
        if wait > 0:
            time.sleep(wait / 1e9)
        late = time.monotonic_ns() - due
        t0 = time.time_ns()
        c0 = time.monotonic_ns()
        ping.send(b"x")
        ping.recv(1)
        rtt = time.monotonic_ns() - c0
        starts.append(t0)
        lates.append(max(0, late) / 1e6)
        rtts.append(rtt / 1e6)
        due += step
        if due < time.monotonic_ns():  # a stall longer than a slot: the next slot from now, not a burst
            due = time.monotonic_ns() + step
    ping.close()
    out.write_text(json.dumps({"start_ns": starts, "late_ms": lates, "rtt_ms": rtts}))


if __name__ == "__main__":
    _worker(Path(sys.argv[1]), float(sys.argv[2]))
