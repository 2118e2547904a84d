#!/usr/bin/env python3
"""The live feed's hot path: decoding Kite's binary ticks, and tick-to-publish latency.

    .venv/bin/python bench/ticker/decode.py [--instruments 3000] [--connections 3] [--bursts 5] [--skip-latency]

1. Decode, one core: messages of ``--instruments`` full-mode packets as the emulator's encoder
   writes them (Kite's layout, docs/KITE.md), decoded by ``KiteTicker._parse_binary`` (to Kite's dicts) and by
   ``ticks.decode`` (to the fleet's payloads); best of 5, CPU time of this thread.
2. Latency: the Kite emulator in a process of its own (as Kite is remote), ``--connections`` x
   ``--instruments`` subscribed in full mode by a KiteFeed on uvloop, then bursts that tick every
   instrument once, in two shapes:
   - ``push_tick``: the emulator's public hook, one WebSocket message per tick, as fast as it goes;
   - Kite-shaped: one message per connection carrying all its instruments, as Kite batches ticks
     (sent through the emulator's ticker connections: internals, so this follows their changes).
   A tick's latency is its publish callback's CLOCK_MONOTONIC minus the moment just before it was
   pushed or its message sent (the clock is shared by the processes of a host); "receipt" is when
   the feed's reactor thread got the message, so receipt -> publish is the feed's own bridge
   (decode, hand-over, the loop calling publish).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import uvloop
from kiteconnect import KiteTicker
from pydantic import SecretStr

from daemons.kite_emulator import Emulator
from daemons.kite_emulator import websocket as ws
from daemons.kite_emulator.packets import Level, Tick, encode, message
from daemons.marketdata.instruments import COLUMNS, Instrument, load_instruments
from daemons.marketdata.kite_feed import KiteFeed
from daemons.marketdata.ticks import Meta, decode
from daemons.runtime.config import KiteSection, MarketdataSection

DEPTH: dict[str, list[dict[str, Any]]] = {
    "buy": [{"quantity": 75 * (k + 1), "price": 100.0 - 0.05 * k, "orders": k + 1} for k in range(5)],
         "sell": [{"quantity": 75 * (k + 2), "price": 100.05 + 0.05 * k, "orders": k + 1} for k in range(5)]}


def write_dump(path: Path, count: int) -> list[Instrument]:
    """``count`` NIFTY options (NFO, segment 2) in Kite's dump format."""
    rows = [",".join(COLUMNS)]
    for n in range(count):
        strike, kind = 15000 + 50 * (n // 2), "CE" if n % 2 == 0 else "PE"
        token = (100_000 + n) << 8 | 2
        rows.append(f"{token},{100_000 + n},NIFTY26N24{strike}{kind},NIFTY,0.0,2026-11-24,{strike}.0,0.05,75,"
                    f"{kind},NFO-OPT,NFO")
    path.write_text("\n".join(rows) + "\n")
    return load_instruments(path)


# -- 1. decode ----------------------------------------------------------------------------------


def cpu_best(fn: Callable[[], Any], reps: int = 5) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t0)
    return best


def bench_decode(instruments: list[Instrument]) -> None:
    n = len(instruments)
    ticks = [Tick(i.token, last_price=100.0 + k * 0.05, last_traded_quantity=75, average_traded_price=100.0,
                  volume_traded=75_000 + k, total_buy_quantity=9000, total_sell_quantity=8000, open=99.0, high=101.0,
                  low=98.0, close=99.5, last_trade_time=1_763_445_600, oi=1_000_000 + k, oi_day_high=1_100_000,
                  oi_day_low=900_000, exchange_timestamp=1_763_445_601,
                  buy=tuple(Level(**lv) for lv in DEPTH["buy"]), sell=tuple(Level(**lv) for lv in DEPTH["sell"]))
             for k, i in enumerate(instruments)]
    full = message([encode(t, "full") for t in ticks])
    # One index packet (32 bytes) among the full ones: what a universe with an index in full mode sends.
    mixed = message([encode(t, "full") for t in ticks[:-1]] + [encode(Tick(256265, last_price=24350.0), "full")])
    meta = {i.token: Meta.of(i) for i in instruments}
    meta[256265] = Meta.of(Instrument(256265, "NIFTY 50", "NIFTY 50", 0.0, None, 0.0, 0.0, 0, "EQ", "INDICES", "NSE"))
    client = KiteTicker("key", "token")
    assert len(decode(full, meta, 0).ticks) == len(client._parse_binary(full)) == n
    print(f"decode: one message of {n:,} full packets ({len(full):,} bytes), best of 5, CPU of one thread")
    rows: list[tuple[str, Callable[[], object]]] = [
        ("KiteTicker._parse_binary -> Kite's dicts", lambda: client._parse_binary(full)),
        ("ticks.decode -> payloads (full only: iter_unpack)", lambda: decode(full, meta, 0)),
        ("ticks.decode -> payloads (one index packet among them)", lambda: decode(mixed, meta, 0)),
    ]
    base = 0.0
    for name, fn in rows:
        fn()
        took = cpu_best(fn)
        base = base or took
        print(f"  {name:<56} {n / took:>11,.0f} ticks/s  {took * 1e3:7.2f} ms/message  x{base / took:.1f}")


# -- 2. latency ---------------------------------------------------------------------------------


def emulator_process(dump: Path, pipe: Connection) -> None:
    """The emulator, driven over ``pipe``: "subs" -> full-mode subscription sizes; ("push", tokens)
    -> push_tick each, reply with the ns just before each push; "batch" -> one full-mode message
    per connection, reply with [(ns just before sending, its tokens)]. Replies carry the CPU spent."""
    with Emulator(instruments_csv=dump, heartbeat_interval=1.0) as em:
        pipe.send((em.api_key, em.access_token, em.ws_url))
        price = 100.0
        while (cmd := pipe.recv()) != "stop":
            if cmd == "subs":
                pipe.send([sum(mode == "full" for mode in s.values()) for s in em.subscriptions()])
                continue
            price += 0.05
            cpu = time.process_time()
            if cmd == "batch":
                conns = em._ticker._snapshot()
                tokens = [list(c.modes()) for c in conns]
                buy, sell = (tuple(Level(**lv) for lv in DEPTH[side]) for side in ("buy", "sell"))
                messages = [message([encode(Tick(t, last_price=price, last_traded_quantity=75, volume_traded=1000,
                                                 oi=5000, exchange_timestamp=int(time.time()), buy=buy, sell=sell),
                                             "full")
                                     for t in group]) for group in tokens]
                sent = []
                for conn, group, msg in zip(conns, tokens, messages, strict=True):
                    sent.append((time.monotonic_ns(), group))
                    conn.send(ws.OP_BINARY, msg, tick=True)
                pipe.send((sent, time.process_time() - cpu))
                continue
            stamps = []
            for token in cmd[1]:
                stamps.append(time.monotonic_ns())
                em.push_tick(token, last_price=price, last_traded_quantity=75, volume_traded=1000, oi=5000,
                             depth=DEPTH)
            pipe.send((list(zip(stamps, ([t] for t in cmd[1]), strict=True)), time.process_time() - cpu))


def tokens_of(payload: bytes) -> list[int]:
    count, at, out = int.from_bytes(payload[:2], "big"), 2, []
    for _ in range(count):
        out.append(int.from_bytes(payload[at + 2:at + 6], "big"))
        at += 2 + int.from_bytes(payload[at:at + 2], "big")
    return out


def percentiles(values_ms: list[float]) -> str:
    v = sorted(values_ms)
    return f"p50 {v[len(v) // 2]:6.1f}  p99 {v[int(len(v) * 0.99)]:6.1f}  max {v[-1]:6.1f} ms"


async def bench_latency(instruments: list[Instrument], connections: int, per_connection: int, bursts: int,
                        dump: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    pipe, child_end = ctx.Pipe()
    child = ctx.Process(target=emulator_process, args=(dump, child_end), daemon=True)
    child.start()
    api_key, access_token, ws_url = pipe.recv()
    arrivals: list[tuple[int, bytes]] = []
    published: dict[int, int] = {}

    def publish(ticks: list[dict[str, Any]]) -> None:
        now = time.monotonic_ns()
        for tick in ticks:
            published[tick["token"]] = now

    loop = asyncio.get_running_loop()
    feed = KiteFeed(MarketdataSection(feed="kite", ticker_mode="full"),
                    KiteSection(api_key=SecretStr(api_key), access_token=SecretStr(access_token), ticker_root=ws_url,
                                max_connections=connections, instruments_per_connection=per_connection),
                    instruments, publish, loop)
    on_ticks = feed._on_ticks

    def timed(conn: Any, payload: bytes) -> None:
        """When the reactor thread got the message (its tokens are read after the burst)."""
        arrivals.append((time.monotonic_ns(), payload))
        on_ticks(conn, payload)

    feed._on_ticks = timed  # type: ignore[method-assign, assignment]
    feed.start()
    while True:
        pipe.send("subs")
        if sorted(pipe.recv()) == [per_connection] * connections:
            break
        await asyncio.sleep(0.1)
    tokens = [i.token for i in instruments]
    print(f"latency: {connections} connections x {per_connection:,} instruments, full mode, {bursts} bursts "
          f"of {len(tokens):,} ticks per shape")
    for shape, command in (("push_tick, one message per tick", ("push", tokens)),
                           (f"Kite-shaped, one message of {per_connection:,} ticks per connection", "batch")):
        print(f"  {shape}:")
        push_to_publish: list[float] = []
        receipt_to_publish: list[float] = []
        for burst in range(1, bursts + 1):
            arrivals.clear()
            published.clear()
            cpu = time.process_time()
            pipe.send(command)
            deadline = time.monotonic() + 60
            while len(published) < len(tokens) and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            sent, emulator_cpu = await loop.run_in_executor(None, pipe.recv)
            feed_cpu = time.process_time() - cpu
            if len(published) < len(tokens):
                print(f"    burst {burst}: only {len(published)} of {len(tokens)} ticks published in 60 s")
                continue
            e2e = [(published[t] - at) / 1e6 for at, group in sent for t in group]
            bridge = [(published[t] - at) / 1e6 for at, payload in arrivals for t in tokens_of(payload)]
            push_to_publish += e2e
            receipt_to_publish += bridge
            print(f"    burst {burst}: sent in {(sent[-1][0] - sent[0][0]) / 1e6:.0f} ms, the last published "
                  f"{(max(published.values()) - sent[-1][0]) / 1e6:.0f} ms after the last send; CPU per tick: feed "
                  f"{feed_cpu / len(tokens) * 1e6:.1f} µs, emulator {emulator_cpu / len(tokens) * 1e6:.1f} µs")
            print(f"      push -> publish     {percentiles(e2e)}")
            print(f"      receipt -> publish  {percentiles(bridge)}")
            await asyncio.sleep(0.5)
        print(f"    all bursts: push -> publish     {percentiles(push_to_publish)}")
        print(f"                receipt -> publish  {percentiles(receipt_to_publish)}")
    print(f"  {feed.status()}")
    feed.stop()
    pipe.send("stop")
    child.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instruments", type=int, default=3000, help="per connection")
    parser.add_argument("--connections", type=int, default=3)
    parser.add_argument("--bursts", type=int, default=5)
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "instruments.csv"
        instruments = write_dump(dump, args.instruments * args.connections)
        bench_decode(instruments[:args.instruments])
        if not args.skip_latency:
            uvloop.run(bench_latency(instruments, args.connections, args.instruments, args.bursts, dump))


if __name__ == "__main__":
    main()
