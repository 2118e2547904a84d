#!/usr/bin/env python3
"""What portfolios add to algo-risk's order path: one signal and one fill, for 10 to 10k portfolios.

    .venv/bin/python bench/portfolios/path.py [--sizes 0,10,1000,10000] [--signals 300] [--no-fsync]

In process, no broker: a ``RiskDaemon`` (its bus client's outbox cleared after each step) with N portfolios
following one strategy, its state in a temporary directory on this disk. Signals alternate an entry and
the exit that closes it, each followed by one fill of its whole net order. Timed per step,
wall (``perf_counter_ns``) and the thread's CPU (``thread_time_ns``: without waits for the disk and
other processes), p50 / p99:
- signal: ``_on_signal``: the fleet's rules, ``sizing.decide`` for every portfolio, the batch appended
  to the allocation log (fdatasync'ed unless ``--no-fsync``) and the approval published;
- fill: ``_on_fill``: the allocation (netting), its log record (fdatasync'ed), the portfolios' book,
  the ``portfolio.allocation`` event, and risk's own checkpoint as before.
Size 0 is today's path without portfolios (the strategy's own quantity), for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from datetime import datetime
from typing import cast

from daemons.risk.main import RiskDaemon
from daemons.risk.rules import RateLimiter
from daemons.runtime.calendar import IST
from daemons.runtime.config import FleetConfig
from daemons.runtime.envelope import EventFactory
from daemons.runtime.metrics import DaemonMetrics
from daemons.runtime.transport import UnixTransport

MARKET = int(datetime(2026, 11, 23, 10, 0, tzinfo=IST).timestamp() * 1e9)


def risk_with(n: int, state: str, fsync: bool) -> RiskDaemon:
    os.environ["STATE_DIRECTORY"] = state
    config = FleetConfig.model_validate({
        "daemons": {"equity": {"strategies": [{"name": "s", "kind": "rsi_reversion",
                                               "params": {"symbol": "INFY", "quantity": 10}}]},
                    "risk": {"max_quantity": 10**9, "max_notional": 1e12, "max_order_value": 1e12}},
        "portfolios": [{"id": f"p{i}", "capital": 1e6 + 1e3 * i, "strategies": ["s"], "risk_fraction": 0.05}
                       for i in range(n)]})
    risk = RiskDaemon(config, DaemonMetrics("risk"))
    asyncio.run(risk.setup())
    risk.rules.rate = RateLimiter(1e12)  # the fleet's 10/s would refuse all but the first few
    if risk.desk is not None and risk.desk.log is not None:
        risk.desk.log.fsync = fsync
    return risk


def clear(risk: RiskDaemon) -> None:
    """What it published (no broker here)."""
    cast(UnixTransport, risk.bus.transport)._outbox.clear()


def run(n: int, signals: int, fsync: bool) -> tuple[list[int], list[int], list[int], list[int]]:
    stamp = EventFactory("bench").stamp
    with tempfile.TemporaryDirectory(dir="/var/tmp") as state:
        risk = risk_with(n, state, fsync)
        risk._on_tick(stamp("marketdata.tick", {"symbol": "INFY", "last_price": 1000.0, "exchange_ts": MARKET,
                                                "lot_size": 1})[0])
        on_signal: list[int] = []
        on_fill: list[int] = []
        cpu_signal: list[int] = []
        cpu_fill: list[int] = []
        held = 0
        for k in range(signals):
            entry = k % 2 == 0
            side = "BUY" if entry else "SELL"
            payload = {"engine": "equity", "strategy": "s", "symbol": "INFY", "side": side,
                       "quantity": 10 if entry else held, "order_type": "MARKET", "limit_price": None, "reason": "",
                       "entry": entry, "tick_price": 1000.0, "tick_exchange_ts": MARKET, "tick_ts": 0,
                       "signal_id": f"s:2026-11-23:{k}"}
            event = stamp("strategy.signal", payload)[0]
            t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
            risk._on_signal(event)
            on_signal.append(time.perf_counter_ns() - t0)
            cpu_signal.append(time.thread_time_ns() - c0)
            quantity = risk.recent[-1][1]["quantity"]
            clear(risk)
            fill = stamp("execution.fill", {"fill_id": f"F{k}", "client_id": f"C{k}", "engine": "equity", "strategy": "s",
                                            "symbol": "INFY", "side": side, "quantity": quantity, "price": 1000.0,
                                            "signal_id": payload["signal_id"], "instrument_type": "EQ"})[0]
            t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
            risk._on_fill(fill)
            on_fill.append(time.perf_counter_ns() - t0)
            cpu_fill.append(time.thread_time_ns() - c0)
            clear(risk)
            held = quantity if entry else 0
        asyncio.run(risk.drain())
    return on_signal, on_fill, cpu_signal, cpu_fill


def quantiles(ns: list[int]) -> str:
    q = statistics.quantiles(ns, n=100)
    return f"{q[49] / 1e3:,.0f} / {q[98] / 1e3:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="0,10,1000,10000")
    parser.add_argument("--signals", type=int, default=300)
    parser.add_argument("--no-fsync", action="store_true")
    args = parser.parse_args()
    print("| portfolios | signal µs p50 / p99 | signal CPU µs p50 / p99 | fill µs p50 / p99 | fill CPU µs p50 / p99 |")
    print("|---:|---:|---:|---:|---:|")
    for n in map(int, args.sizes.split(",")):
        on_signal, on_fill, cpu_signal, cpu_fill = run(n, args.signals, not args.no_fsync)
        print(f"| {n:,} | {quantiles(on_signal)} | {quantiles(cpu_signal)} | {quantiles(on_fill)} | {quantiles(cpu_fill)} |",
              flush=True)


if __name__ == "__main__":
    main()
