"""Where a bus hop's time goes on a busy host: each daemon's scheduling delay, from ``perf sched``.

A hop (publish stamp to the subscriber's read) is the publisher finishing its turn and writing, the
broker waking, routing and writing, and the subscriber waking. On 2 vCPUs shared by ten processes a
wake-up often finds both CPUs busy: the time from being woken to running (perf's "sch delay") is
spent on the run queue, not in the code. ``record`` captures the scheduler's tracepoints for a few
seconds of the window; ``delays`` reads ``perf sched timehist`` for each daemon's main thread.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from pipeline.analysis import summary

# "   79371.874569 [0001]  algo-risk[2552]   0.000   0.012   0.033" (wait time, sch delay, run time in ms);
# a thread of a process shows as name[tid/pid].
_LINE = re.compile(r"^\s*\d+\.\d+\s+\[\d+\]\s+(?P<task>\S.*?)\[(?P<tid>\d+)(?:/\d+)?\]\s+"
                   r"(?P<wait>[\d.]+)\s+(?P<delay>[\d.]+)\s+(?P<run>[\d.]+)\s*$")


def record(output: Path, seconds: float) -> subprocess.Popen[bytes]:
    """Start recording every CPU's scheduler events for ``seconds`` (perf stops itself)."""
    return subprocess.Popen(["perf", "sched", "record", "-a", "-o", str(output), "--", "sleep", f"{seconds:.1f}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def timehist(data: Path) -> str:
    return subprocess.run(["perf", "sched", "timehist", "-i", str(data)], capture_output=True, text=True,
                          check=True).stdout


def delays(text: str, threads: Mapping[int, str]) -> dict[str, dict[str, float]]:
    """Per daemon (its main thread's tid in ``threads``): scheduling delay n / p50 / p99 / max in ms,
    and the CPU it ran, over every time it was switched out in the recording."""
    runs: dict[str, list[float]] = {name: [] for name in threads.values()}
    ran: dict[str, float] = dict.fromkeys(threads.values(), 0.0)
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        name = threads.get(int(m["tid"]))
        if name is None:
            continue
        runs[name].append(float(m["delay"]))
        ran[name] += float(m["run"])
    return {name: summary(values) | {"run_ms": ran[name]} for name, values in runs.items()}


def table(loads: Iterable[Mapping[str, object]]) -> str:
    """A Markdown table: each load's daemons by scheduling delay."""
    out = ["| ticks/s | daemon | wake-ups | sch delay p50 ms | p99 ms | max ms | ran ms |", "|---:|---|---:|---:|---:|---:|---:|"]
    for load in loads:
        sched = load.get("sched")
        if not isinstance(sched, dict):
            continue
        for name, s in sorted(sched.items(), key=lambda item: -item[1]["p50"]):
            out.append(f"| {load['rate']:,} | {name} | {s['n']:.0f} | {s['p50']:.3f} | {s['p99']:.3f} | {s['max']:.2f} | "
                       f"{s['run_ms']:.0f} |")
    return "\n".join(out)
