#!/usr/bin/env python3
"""A model strategy's prediction cost in process: the shipped example model (configs/models/example.onnx,
ONNX Runtime, one thread) on one features.bar row at a time, as ModelStrategy.on_bar calls it, and the
whole on_bar (prediction, thresholds, signal with the model's identity).

    .venv/bin/python bench/models/inference.py [--rows 20000]

Results: bench/models/README.md.
"""

from __future__ import annotations

import argparse
import random
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemons.features.indicators import FEATURES
from daemons.models.onnx_model import Model
from daemons.strategies import FeatureBar, ModelStrategy

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "models" / "example.onnx"


def rows(n: int) -> list[list[float | None]]:
    rng = random.Random(1)
    out: list[list[float | None]] = []
    for _ in range(n):
        row: list[float | None] = [rng.gauss(0, 0.001), 100.0, 100.0, rng.uniform(20, 80), 1.0,
                                   abs(rng.gauss(0.001, 0.0003)), 0.0]
        out.append(row)
    assert len(out[0]) == len(FEATURES)
    return out


def timed(call: Callable[[Any], object], items: list[Any]) -> list[float]:
    """Seconds of each call, one item each."""
    took = []
    for item in items:
        t = time.perf_counter()
        call(item)
        took.append(time.perf_counter() - t)
    return took


def percentiles(took: list[float]) -> str:
    took.sort()
    n = len(took)
    return (f"p50 {took[n // 2] * 1e6:.1f} µs, p99 {took[n * 99 // 100] * 1e6:.1f} µs, "
            f"max {took[-1] * 1e6:.1f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    model = Model.load(EXAMPLE)
    print(f"load (ONNX Runtime imported, session built): {(time.perf_counter() - started) * 1e3:.0f} ms, "
          f"+{(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024:.0f} MB max RSS")
    data = rows(args.rows)
    for row in data[:1000]:  # warm up
        model.predict(row)
    print(f"predict, one row: {percentiles(timed(model.predict, data))}")
    strategy = ModelStrategy("bench", model=str(EXAMPLE), symbol="X", quantity=1, buy_above=0.5, sell_below=0.5)
    strategy.open()
    bars = [FeatureBar(1, "X", 60_000_000_000 * (n + 1), row) for n, row in enumerate(data)]  # one bar a minute
    print(f"on_bar (predict, thresholds, signals): {percentiles(timed(strategy.on_bar, bars))}")


if __name__ == "__main__":
    main()
