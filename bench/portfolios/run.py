#!/usr/bin/env python3
"""One signal, every portfolio: vectorised risk checks, sizing and netting against a per-portfolio loop.

    .venv/bin/python bench/portfolios/run.py [--sizes 10,1000,10000] [--signals 2000]

For each size: portfolios with random capital (1 lakh to 10 crore), each following 1-4 of 10 strategies,
with random limits, open positions and today's realised P&L (some past their loss limit, some disabled),
then ``--signals`` signals (random strategy, side, price, an exit now and then) on 20 symbols.
- vectorised: ``sizing.decide`` for all portfolios, then ``NetOrder`` of the intents (the exchange order);
- loop: the same rule one portfolio at a time in plain Python over ``Portfolio`` objects, summing the
  intents into the net order, as a per-portfolio design would.
Both are checked to give the same lots, reasons and net order on every signal before they are timed.
Wall time per signal (``perf_counter_ns``), p50 / p99 / max, the vectorised path's CPU time p99
(``thread_time_ns``: without the time other processes of a shared machine take the core), and the
ratios of the means and of the medians; the loop runs
on at most 200 signals at 10k portfolios (it is slow). Targets (issue 16): 10k portfolios < 1 ms p99,
>= 20x the loop.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np

from daemons.portfolios.book import PortfolioBook
from daemons.portfolios.netting import NetOrder
from daemons.portfolios.portfolio import Portfolio, Reason, Signal
from daemons.portfolios.sizing import decide

STRATEGIES = [f"s{i}" for i in range(10)]
SYMBOLS = [(f"SYM{i}", random.Random(i).choice((1, 15, 25, 75))) for i in range(20)]


def make(n: int, rng: random.Random) -> tuple[list[Portfolio], dict[str, list[int]], list[float]]:
    portfolios = [Portfolio(f"p{i}", capital=10 ** rng.uniform(5, 9),
                            strategies=frozenset(rng.sample(STRATEGIES, rng.randint(1, 4))),
                            risk_fraction=rng.uniform(0.01, 0.2), max_lots=rng.randint(1, 40),
                            max_order_value=10 ** rng.uniform(5, 7), daily_loss_limit=10 ** rng.uniform(4, 6),
                            enabled=rng.random() > 0.05) for i in range(n)]
    held = {symbol: [rng.randint(-5, 5) if rng.random() < 0.3 else 0 for _ in range(n)] for symbol, _ in SYMBOLS}
    realised = [rng.uniform(-2e5, 1e5) for _ in range(n)]
    return portfolios, held, realised


def signals(count: int, rng: random.Random) -> list[Signal]:
    out = []
    for _ in range(count):
        symbol, lot = rng.choice(SYMBOLS)
        out.append(Signal(rng.choice(STRATEGIES), symbol, rng.choice((1, -1)), rng.uniform(50, 5000), lot,
                          exit=rng.random() < 0.1))
    return out


def loop_decide(portfolios: list[Portfolio], held: list[int], realised: list[float],
                s: Signal) -> tuple[list[int], list[int], int]:
    """The per-portfolio loop: the rule of sizing.py, one portfolio at a time."""
    lots_out, reasons, net = [], [], 0
    lot_value = s.price * s.lot_size
    for p, h, r in zip(portfolios, held, realised, strict=True):
        lots, reason = 0, Reason.OK
        if s.strategy not in p.strategies:
            reason = Reason.NOT_FOLLOWING
        elif s.exit:
            if h and (h > 0) != (s.side > 0):
                lots = -h
            else:
                reason = Reason.FLAT
        elif not p.enabled:
            reason = Reason.DISABLED
        elif r <= -p.daily_loss_limit:
            reason = Reason.LOSS_LIMIT
        elif p.max_order_value < lot_value:
            reason = Reason.ORDER_VALUE
        elif (room := p.max_lots - s.side * h) <= 0:
            reason = Reason.POSITION_LIMIT
        else:
            lots = min(int(min(p.capital * p.risk_fraction, p.max_order_value) / lot_value), room) * s.side
            if not lots:
                reason = Reason.TOO_SMALL
        lots_out.append(lots)
        reasons.append(int(reason))
        net += lots
    return lots_out, reasons, net


def percentiles(ns: list[int]) -> tuple[float, float, float, float]:
    us = sorted(x / 1000 for x in ns)
    return statistics.median(us), us[min(len(us) - 1, int(len(us) * 0.99))], us[-1], statistics.fmean(us)


def run(n: int, count: int) -> None:
    rng = random.Random(n)
    portfolios, held, realised = make(n, rng)
    book = PortfolioBook(portfolios)
    for symbol, lot in SYMBOLS:
        book.position(symbol).quantity[:] = np.array(held[symbol], dtype=np.int64) * lot
    book.realised[:] = realised
    sigs = signals(count, rng)
    for s in sigs[:50]:
        intents = decide(book, s)
        lots, reasons, net = loop_decide(portfolios, held[s.symbol], realised, s)
        assert intents.lots.tolist() == lots and intents.reasons.tolist() == reasons
        assert NetOrder(s.symbol, s.lot_size, intents.lots).lots == net
    vector: list[int] = []
    vector_cpu: list[int] = []
    wall, cpu = time.perf_counter_ns, time.thread_time_ns
    for s in sigs:
        start, start_cpu = wall(), cpu()
        NetOrder(s.symbol, s.lot_size, decide(book, s).lots)
        vector_cpu.append(cpu() - start_cpu)
        vector.append(wall() - start)
    loop: list[int] = []
    for s in sigs[:200 if n >= 10_000 else count]:
        h = held[s.symbol]
        start = time.perf_counter_ns()
        loop_decide(portfolios, h, realised, s)
        loop.append(time.perf_counter_ns() - start)
    v, vc, lp = percentiles(vector), percentiles(vector_cpu), percentiles(loop)
    print(f"| {n:,} | {v[0]:.1f} / {v[1]:.1f} / {v[2]:.1f} | {vc[1]:.1f} | {lp[0]:.1f} / {lp[1]:.1f} / {lp[2]:.1f} "
          f"| {lp[3] / v[3]:.1f}x | {lp[0] / v[0]:.1f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,1000,10000")
    parser.add_argument("--signals", type=int, default=2000)
    args = parser.parse_args()
    print("| portfolios | vectorised µs p50 / p99 / max | vectorised CPU µs p99 | loop µs p50 / p99 / max "
          "| loop / vectorised (means) | (medians) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in (int(x) for x in args.sizes.split(",")):
        run(n, args.signals)


if __name__ == "__main__":
    main()
