#!/usr/bin/env python3
"""What the order path's own state costs as a trading day fills up: an engine's record before a signal and
after a fill (at N fills seen today), and algo-execution's handling of one approval (at N orders today),
each in its real daemon object, on a disk (/var/tmp), one process, no bus. Also an engine's record before a
signal as the strategies it hosts grow (EMA crossovers with warm state).

    .venv/bin/python bench/wal/day_growth.py
    .venv/bin/python bench/wal/day_growth.py --src /tmp/base    # another checkout's daemons/ (before/after)

Results: bench/README.md ("The order path's state as the day fills up").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def pct(samples: list[int], q: float) -> float:
    samples = sorted(samples)
    return samples[int(q * (len(samples) - 1))] / 1e3


def before_signal(engine: Any, name: str) -> None:
    """The engine's record of ``name``'s decision, written and flushed, with no signal to publish (checkouts
    before 2026-12-06 record it in ``_save_before_signal``, those before 2026-12-05's sixth session without a name)."""
    import inspect

    if hasattr(engine, "_signal"):
        engine._signal(name, [], "bench")
    elif "name" in inspect.signature(engine._save_before_signal).parameters:
        engine._save_before_signal(name)
    else:
        engine._save_before_signal()


@contextmanager
def paper_engine() -> Iterator[Any]:
    """algo-equity as configs/paper.toml builds it, its state in a fresh directory on a disk (/var/tmp)."""
    from daemons.engine.main import EquityEngine
    from daemons.runtime.config import load_config
    from daemons.runtime.metrics import DaemonMetrics

    with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
        os.environ["STATE_DIRECTORY"] = d
        path = Path(d) / "fleet.toml"
        path.write_text((REPO / "configs" / "paper.toml").read_text())
        engine = EquityEngine(load_config(path), DaemonMetrics("equity"))
        engine.checkpoint.read()
        try:
            yield engine
        finally:
            engine.checkpoint.close()


def engine_rows(fills: list[int]) -> list[str]:
    """µs of the record before a signal, and of the record (or rewrite) after a fill, at each count of fills."""
    from daemons.runtime.envelope import EXECUTION_FILL, Event

    rows = []
    for n in fills:
        with paper_engine() as engine:
            name = next(iter(engine.strategies))
            engine.seen_fills = {f"26112000{k:07d}-1" for k in range(n)}
            engine.save()  # a day of n fills, in checkpoint.json
            signal, fill = [], []
            for k in range(200):
                started = time.perf_counter_ns()
                before_signal(engine, name)
                signal.append(time.perf_counter_ns() - started)
                payload = {"fill_id": f"X{k}", "strategy": name, "symbol": "INFY", "side": "BUY", "quantity": 1,
                           "price": 100.0}
                started = time.perf_counter_ns()
                engine._on_fill(Event(EXECUTION_FILL, "execution", k + 1, payload, f"f{k}", k, f"f{k}"))
                fill.append(time.perf_counter_ns() - started)
        rows.append(f"| {n:,} | {pct(signal, .5):,.0f} / {pct(signal, .9):,.0f} | {pct(fill, .5):,.0f} / {pct(fill, .9):,.0f} |")
    return rows


def hosting_rows(hosted: list[int]) -> list[str]:
    """µs and bytes of the record before one strategy's signal, with ``n`` strategies hosted by the engine."""
    from daemons.strategies.trend import EmaCrossover

    rows = []
    for n in hosted:
        with paper_engine() as engine:
            engine.strategies = {f"ema{k}": EmaCrossover(f"ema{k}", quantity=1, symbol=f"SYM{k}") for k in range(n)}
            for k, strategy in enumerate(engine.strategies.values()):
                assert isinstance(strategy, EmaCrossover)
                for price in range(30):  # warm: EMAs and a trend, as a strategy has them mid-session
                    strategy.fast.update(100.0 + price + k)
                    strategy.slow.update(100.0 + price + k)
            engine.counts.update({name: 0 for name in engine.strategies})
            engine.save()
            took = []
            for _ in range(200):
                started = time.perf_counter_ns()
                before_signal(engine, "ema0")
                took.append(time.perf_counter_ns() - started)
            size = engine.checkpoint.wal.path.stat().st_size // 200
        rows.append(f"| {n:,} | {pct(took, .5):,.0f} / {pct(took, .9):,.0f} | {size:,} |")
    return rows


def risk_rows(fills: list[int]) -> list[str]:
    """µs of algo-risk's handling of a fill (made durable before the next signal is decided), at each count."""
    from daemons.risk.main import RiskDaemon
    from daemons.runtime.config import FleetConfig
    from daemons.runtime.envelope import EXECUTION_FILL, Event
    from daemons.runtime.metrics import DaemonMetrics

    rows = []
    for n in fills:
        with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
            os.environ["STATE_DIRECTORY"] = d
            risk = RiskDaemon(FleetConfig(), DaemonMetrics("risk"))
            asyncio.run(risk.setup())
            risk.seen_fills = {f"26112000{k:07d}-1" for k in range(n)}
            risk.save()
            took = []
            for k in range(200):
                payload = {"fill_id": f"X{k}", "engine": "equity", "strategy": "s", "symbol": "INFY", "side": "BUY",
                           "quantity": 1, "price": 100.0}
                started = time.perf_counter_ns()
                risk._on_fill(Event(EXECUTION_FILL, "execution", k + 1, payload, f"f{k}", k, f"f{k}"))
                took.append(time.perf_counter_ns() - started)
            asyncio.run(risk.drain())
        rows.append(f"| {n:,} | {pct(took, .5):,.0f} / {pct(took, .9):,.0f} |")
    return rows


def execution_rows(orders: list[int]) -> list[str]:
    """µs from an approval's handler to its order event, with ``n`` orders (half working) in the day already."""
    from daemons.execution.main import ExecutionDaemon
    from daemons.runtime.config import FleetConfig
    from daemons.runtime.envelope import EventFactory
    from daemons.runtime.metrics import DaemonMetrics

    stamp = EventFactory("risk").stamp
    tick = {"symbol": "INFY", "last_price": 1000.0, "bid": 1000.0, "ask": 1000.5, "bid_qty": 1, "ask_qty": 1,
            "lot_size": 1, "tick_size": 0.05, "exchange_ts": 1, "type": "EQ", "exchange": "NSE"}

    def approval(k: int) -> dict[str, Any]:
        return {"engine": "equity", "strategy": "s", "symbol": "INFY", "side": "BUY", "quantity": 1_000_000,
                "order_type": "MARKET", "limit_price": None, "signal_id": f"s:2026-11-20:{k}", "tick_ts": time.time_ns(),
                "instrument_type": "EQ", "exchange": "NSE", "lot_size": 1, "tick_size": 0.05, "strike": 0.0}

    async def day(n: int) -> list[int]:
        d = ExecutionDaemon(FleetConfig.model_validate({"daemons": {"execution": {
            "orders_per_day": 5000, "margin": {"funds": 1e12}}}}), DaemonMetrics("execution"))
        d.sender.governor.wait = lambda now: 0.0  # type: ignore[method-assign]  # Kite's rate budget is not measured here
        d.sender.governor.take = lambda now: None  # type: ignore[method-assign]
        await d._open_day(date(2026, 11, 20))
        assert d.paper is not None
        d.paper.on_tick(tick, 0)
        took = []
        for k in range(n + 200):
            event = stamp("risk.approved", approval(k))[0]
            started = time.perf_counter_ns()
            d._on_approved(event)  # a million shares at a touch of 1: each stays working
            if k >= n:
                took.append(time.perf_counter_ns() - started)
            await asyncio.sleep(0)  # the loop's after-turn fdatasyncs, as in the daemon
            await asyncio.sleep(0)
        d._close_files()
        return took

    rows = []
    for n in orders:
        with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
            os.environ["STATE_DIRECTORY"] = tmp
            took = asyncio.run(day(n))
        rows.append(f"| {n:,} | {pct(took, .5):,.0f} / {pct(took, .9):,.0f} |")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", type=Path, default=REPO, help="the checkout whose daemons/ to measure")
    p.add_argument("--fills", default="0,100,1000,5000")
    p.add_argument("--orders", default="0,150,1000")
    p.add_argument("--hosted", default="1,10,100", help="strategies an engine hosts")
    args = p.parse_args()
    sys.path.insert(0, str(args.src))
    import daemons
    print(f"daemons/ from {Path(daemons.__file__).parent.parent}\n")
    counts = {name: [int(x) for x in getattr(args, name).split(",")] for name in ("fills", "hosted", "orders")}
    for header, rows in (
            (["fills today", "engine: record before a signal, p50 / p90 µs", "after a fill, p50 / p90 µs"],
             engine_rows(counts["fills"])),
            (["strategies hosted", "engine: record before one's signal, p50 / p90 µs", "bytes"],
             hosting_rows(counts["hosted"])),
            (["fills today", "risk: a fill, p50 / p90 µs"], risk_rows(counts["fills"])),
            (["orders today", "execution: approval -> order event, p50 / p90 µs"], execution_rows(counts["orders"]))):
        print("\n".join([f"| {' | '.join(header)} |", "|" + "---:|" * len(header), *rows, ""]))


if __name__ == "__main__":
    main()
