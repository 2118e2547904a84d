#!/usr/bin/env python3
"""The feature stage's memory in algo-marketdata at a full universe: VmRSS growth of a fresh process
after ``--bars`` one-minute bars of ``--instruments`` instruments went through ``FeatureStage`` (candles,
indicators, the cache), for the cache keeping every symbol's history or only a strategy's few.

    .venv/bin/python bench/features/memory.py [--instruments 9000] [--bars 130] [--watched 40]

Each variant runs in a process of its own (a freed numpy array's pages need not go back to the OS, so
one process measuring several would understate the later ones). Results: bench/features/README.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from daemons.features.cache import COLUMNS
from daemons.features.indicators import Periods
from daemons.features.stage import FeatureStage
from daemons.runtime.envelope import tick_key

NS = 1_000_000_000
OPEN_NS = 1_795_405_500 * NS  # 2026-11-23 09:15 IST


def vmrss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def one(instruments: int, bars: int, history: int, watched: int | None) -> dict[str, float]:
    """Grow a stage as the feed would and report what it holds (this process only)."""
    symbols = [f"SYN{i:05d}" for i in range(instruments)]
    ticks = [{"token": 1000 + i, "symbol": s, "last_price": 100.0, "volume": 0, "last_qty": 0, "oi": 0,
              "exchange_ts": OPEN_NS} for i, s in enumerate(symbols)]
    keys = [tick_key(t) for t in ticks]
    cached = None if watched is None else frozenset(symbols[:: max(1, instruments // max(watched, 1))][:watched])
    before = vmrss_kib()
    stage = FeatureStage(60, history, Periods(), cached)
    for n in range(bars + 1):  # the first tick of bar n + 1 closes bar n
        for i, (tick, key) in enumerate(zip(ticks, keys, strict=True)):
            tick["exchange_ts"] = OPEN_NS + n * 60 * NS
            tick["last_price"] = 100.0 + (n * 7 + i) % 13 * 0.05
            tick["volume"] = n * 10
            stage.on_tick(tick, key)
        while stage.pending:
            stage.close_next()
    grown = vmrss_kib() - before
    rings = len(stage.cache.rings)
    return {"rss_mb": grown / 1024, "rings": rings, "ring_mb": rings * history * len(COLUMNS) * 8 / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instruments", type=int, default=9000)
    ap.add_argument("--bars", type=int, default=130, help="bars closed per instrument (more than the history)")
    ap.add_argument("--watched", type=int, default=40, help="symbols the strategies that read bars watch")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # history,watched: run one variant here, print JSON
    args = ap.parse_args()
    if args.one:
        history, watched = args.one.split(",")
        print(json.dumps(one(args.instruments, args.bars, int(history), None if watched == "all" else int(watched))))
        return
    print(f"{args.instruments} instruments, {args.bars} one-minute bars each, {len(COLUMNS)} float64 columns a row\n")
    print("| cache keeps | history | rings | ring bytes | VmRSS growth | time |")
    print("|---|---:|---:|---:|---:|---:|")
    for history, watched in ((120, "all"), (60, "all"), (120, str(args.watched)), (120, "0")):
        started = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--instruments", str(args.instruments), "--bars", str(args.bars),
                              "--one", f"{history},{watched}"], check=True, capture_output=True, text=True)
        r = json.loads(out.stdout)
        who = "every symbol" if watched == "all" else f"{watched} watched symbols"
        print(f"| {who} | {history} | {r['rings']:,} | {r['ring_mb']:.1f} MB | {r['rss_mb']:.1f} MB | "
              f"{time.perf_counter() - started:.0f} s |")


if __name__ == "__main__":
    main()
