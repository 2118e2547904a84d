#!/usr/bin/env python3
"""Candles and features: CPU per tick in the feed at 10k ticks/s, and the feature payloads against JSON.

    .venv/bin/python bench/features/run.py [--instruments 9000] [--rate 10000] [--minutes 3] [--repeat 5]

1. CPU per tick: a stream of ``--instruments`` instruments at ``--rate`` ticks/s of exchange time
   (each instrument ticks every instruments/rate seconds, so a 1-minute bar has rate*60/instruments
   ticks) through ``FeatureStage`` as algo-marketdata runs it: ``on_tick`` for every tick, and every
   closed bar's indicators, cache row and both payloads stamped into bus bodies (``EventFactory.stamp``,
   what ``BusClient.publish`` does before the socket). CPU time of this thread, best of ``--repeat``.
   For comparison, in the same run: what a separate consumer pays per tick only to decode the tick
   (``Event.decode`` of the tick's body, as every subscriber does), and to stamp it (the feed's own cost).
2. Encoding: one symbol's features at a bar close (``features.bar``), and a 120-bar snapshot
   (``features.snapshot``), each as a whole bus body, in four payload shapes: named JSON fields, JSON
   arrays, a msgpack array (msgspec) in base64, and a little-endian float64 array in base64.
   Bytes of the body; µs to build the payload and stamp it; µs to decode the body and get the numbers
   out (a list, or a numpy array for the float64 form). Best of ``--repeat``.
"""

from __future__ import annotations

import argparse
import base64
import math
import random
import struct
import time
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np

from daemons.features.cache import COLUMNS
from daemons.features.indicators import FEATURES, Periods
from daemons.features.stage import FeatureStage
from daemons.runtime.envelope import Event, EventFactory, decode_body, tick_key

NS = 1_000_000_000
OPEN_NS = 1_795_405_500 * NS  # 2026-11-23 09:15 IST


def ticks(instruments: int, rate: int, minutes: float) -> list[dict[str, Any]]:
    """Simulator-shaped ticks, round-robin over the instruments, ``rate`` per second of exchange time."""
    rng = random.Random(1)
    prices = [rng.uniform(50, 5000) for _ in range(instruments)]
    volumes = [0] * instruments
    out = []
    for n in range(int(rate * 60 * minutes)):
        i = n % instruments
        prices[i] = round(prices[i] * math.exp(rng.gauss(0, 0.0005)), 2)
        qty = rng.randrange(1, 50)
        volumes[i] += qty
        out.append({"token": 1000 + i, "symbol": f"SYM{i}", "exchange": "NSE", "last_price": prices[i], "last_qty": qty,
                    "bid": prices[i] - 0.05, "ask": prices[i] + 0.05, "bid_qty": 100, "ask_qty": 120,
                    "volume": volumes[i], "oi": 0, "exchange_ts": OPEN_NS + n * NS // rate, "type": "EQ",
                    "underlying": f"SYM{i}", "strike": 0.0, "expiry": None, "lot_size": 1, "tick_size": 0.05})
    return out


def cpu(fn: Callable[[], None], repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        start = time.thread_time()
        fn()
        best = min(best, time.thread_time() - start)
    return best


def feed_cost(args: argparse.Namespace) -> None:
    stream = ticks(args.instruments, args.rate, args.minutes)
    keyed = [(t, tick_key(t)) for t in stream]  # the feed has the key already: it published the tick with it
    factory = EventFactory("marketdata")
    bodies = [factory.stamp("marketdata.tick", t, key=str(t["token"]))[1] for t in stream[:50_000]]
    counts = {"bars": 0}

    def on_tick_only() -> None:
        stage = FeatureStage(60, 120, Periods())
        for tick, key in keyed:
            stage.on_tick(tick, key)

    def whole() -> None:
        stage = FeatureStage(60, 120, Periods())
        stamp = EventFactory("marketdata").stamp
        bars = 0
        for tick, key in keyed:
            if stage.on_tick(tick, key):
                while stage.pending:
                    _, ohlc, features = stage.close_next()
                    stamp("marketdata.ohlc", ohlc)
                    stamp("features.bar", features)
                    bars += 1
        counts["bars"] = bars

    def decode_ticks() -> None:
        for body in bodies:
            Event.decode(body, "1")

    def stamp_ticks() -> None:
        stamp = EventFactory("marketdata").stamp
        for tick in stream[:50_000]:
            stamp("marketdata.tick", tick, key="1")

    n = len(stream)
    only = cpu(on_tick_only, args.repeat) / n * 1e6
    total = cpu(whole, args.repeat) / n * 1e6
    decode = cpu(decode_ticks, args.repeat) / len(bodies) * 1e6
    stamp = cpu(stamp_ticks, args.repeat) / 50_000 * 1e6
    print(f"## CPU per tick: {args.instruments} instruments at {args.rate} ticks/s, {args.minutes:g} min of exchange "
          f"time ({n} ticks, {counts['bars']} bars closed)\n")
    print("| work | µs per tick | share of one core at the rate |")
    print("|---|---|---|")
    for label, us in (("candles only (`on_tick`)", only),
                      ("candles + indicators + cache + both payloads stamped (what marketdata adds)", total),
                      ("for comparison: stamping the tick itself (marketdata's own publish)", stamp),
                      ("for comparison: decoding the tick (what any subscriber pays first)", decode)):
        print(f"| {label} | {us:.2f} | {us * args.rate / 1e4:.1f}% |")


def encodings(args: argparse.Namespace) -> None:
    rng = random.Random(2)
    head = {"schema": 1, "token": 12345678, "symbol": "NIFTY26DECFUT", "start": OPEN_NS, "end": OPEN_NS + 60 * NS}
    row = [rng.uniform(-1, 1) * 10 ** rng.randrange(-4, 5) for _ in FEATURES]
    table = [[rng.uniform(-1, 1) * 10 ** rng.randrange(-4, 5) for _ in COLUMNS] for _ in range(120)]
    array = np.array(table)
    packer = msgspec.msgpack.Encoder()
    one_row = msgspec.msgpack.Decoder(list[float])
    rows = msgspec.msgpack.Decoder(list[list[float]])
    f8 = struct.Struct(f"<{len(FEATURES)}d")

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    shapes: dict[str, list[tuple[str, Callable[[], dict[str, Any]], Callable[[dict[str, Any]], Any]]]] = {
        "features.bar (one symbol, 7 features)": [
            ("JSON, named fields", lambda: {**head, **dict(zip(FEATURES, row, strict=True))},
             lambda p: [p[name] for name in FEATURES]),
            ("JSON array (chosen)", lambda: {**head, "v": row}, lambda p: p["v"]),
            ("msgpack array, base64", lambda: {**head, "f": b64(packer.encode(row))},
             lambda p: one_row.decode(base64.b64decode(p["f"]))),
            ("float64 array, base64", lambda: {**head, "f": b64(f8.pack(*row))},
             lambda p: f8.unpack(base64.b64decode(p["f"]))),
        ],
        f"features.snapshot (120 bars x {len(COLUMNS)} columns)": [
            ("JSON, named fields", lambda: {**head, "rows": [dict(zip(COLUMNS, r, strict=True)) for r in table]},
             lambda p: [[r[c] for c in COLUMNS] for r in p["rows"]]),
            ("JSON arrays", lambda: {**head, "rows": table}, lambda p: p["rows"]),
            ("msgpack arrays, base64", lambda: {**head, "f": b64(packer.encode(table))},
             lambda p: rows.decode(base64.b64decode(p["f"]))),
            ("float64 array, base64 (chosen)", lambda: {**head, "rows": 120, "data": b64(array.astype("<f8").tobytes())},
             lambda p: np.frombuffer(base64.b64decode(p["data"]), dtype="<f8").reshape(p["rows"], -1)),
        ],
    }
    for title, variants in shapes.items():
        print(f"\n## {title}\n")
        print("| payload | bytes (whole body) | build + stamp µs | decode + values µs |")
        print("|---|---|---|---|")
        count = 20_000 if "bar" in title else 1_000
        for label, build, read in variants:
            factory = EventFactory("marketdata")
            body = factory.stamp("features.x", build())[1]

            def enc(build: Callable[[], dict[str, Any]] = build, stamp: Any = factory.stamp, count: int = count) -> None:
                for _ in range(count):
                    stamp("features.x", build())

            def dec(read: Callable[[dict[str, Any]], Any] = read, body: bytes = body, count: int = count) -> None:
                for _ in range(count):
                    read(decode_body(body).payload)

            e = cpu(enc, args.repeat) / count * 1e6
            d = cpu(dec, args.repeat) / count * 1e6
            print(f"| {label} | {len(body)} | {e:.2f} | {d:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instruments", type=int, default=9000)
    parser.add_argument("--rate", type=int, default=10_000, help="ticks per second of exchange time")
    parser.add_argument("--minutes", type=float, default=3.0, help="exchange time to run (bars close each minute)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    feed_cost(args)
    encodings(args)


if __name__ == "__main__":
    main()
