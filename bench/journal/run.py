"""The journal at market scale: bytes per tick on disk, journal CPU per 1k ticks, the tick rate one
core keeps up with, and how fast a day reads back (bench/journal/README.md has the method and results).

    .venv/bin/python bench/journal/run.py [--ticks N] [--rate R] [--strikes S] [--dir DIR] [--json FILE]

Ticks come from the paper simulator (configs/instruments/paper.csv and a NIFTY option chain of
``--strikes`` strikes a side), stamped as algo-marketdata stamps them, and go through the real
``JournalDaemon._on_event`` into a real day directory, with the daemon's once-a-period ``_tick``
(frame, fdatasync, disk check) every ``--rate`` ticks: the work algo-journal does per tick after its
bus client has decoded the event. That decode is measured on its own (``Event.decode``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import orjson

from daemons.journal.main import JournalDaemon
from daemons.journal.retention import compact_day
from daemons.journal.writer import FRAME_EVENTS
from daemons.journal_format import frames, reader
from daemons.journal_format.layout import EVENTS, MARKET
from daemons.marketdata.contracts import derivatives
from daemons.marketdata.instruments import load_instruments
from daemons.marketdata.session import SessionClock
from daemons.marketdata.simulator import MarketSimulator
from daemons.runtime.config import FleetConfig
from daemons.runtime.envelope import Event, EventFactory, tick_key
from daemons.runtime.metrics import DaemonMetrics

REPO = Path(__file__).resolve().parents[2]
DAY = date(2026, 11, 20)


def make_ticks(n: int, strikes: int) -> tuple[list[Event], list[bytes], int]:
    spots = load_instruments(REPO / "configs" / "instruments" / "paper.csv")
    nifty = next(i for i in spots if i.symbol == "NIFTY 50")
    sim = MarketSimulator(spots + derivatives(nifty, DAY, lot_size=75, strikes=strikes, step=50), seed=7,
                          clock=SessionClock(DAY, 22_500))
    stamp = EventFactory("marketdata").stamp
    events: list[Event] = []
    bodies: list[bytes] = []
    while len(events) < n:
        for payload in sim.step():
            event, body = stamp("marketdata.tick", payload, key=tick_key(payload))
            events.append(event)
            bodies.append(body)
    return events[:n], bodies[:n], len(sim.instruments)


def journal_cpu(events: list[Event], rate: int, folder: Path) -> tuple[float, Path]:
    """CPU seconds algo-journal spends on ``events`` (one timer period per ``rate`` of them); the day written."""
    config = FleetConfig.model_validate({"daemons": {"journal": {"directory": str(folder), "shed_free_mb": 0}}})
    d = JournalDaemon(config, DaemonMetrics("journal"))

    async def feed() -> float:
        loop_batch = 64  # the bus hands the journal batches; one flush is scheduled per batch
        started = time.process_time()
        for i in range(0, len(events), loop_batch):
            for event in events[i:i + loop_batch]:
                d._on_event(event)
            await asyncio.sleep(0)  # the batch's flush runs
            if (i // loop_batch) % max(1, rate // loop_batch) == 0:
                d._tick()
        await d.drain()
        return time.process_time() - started

    cpu = asyncio.run(feed())
    return cpu, next(p for p in folder.iterdir() if p.is_dir())


def breakdown(events: list[Event]) -> dict[str, float]:
    """µs per tick of the frame work alone: gathering rows, the block's columnar JSON, zstd."""
    blocks, block = [], frames.Block()
    started = time.process_time()
    for event in events:
        block.add(event)
        if block.count >= FRAME_EVENTS:
            blocks.append(block)
            block = frames.Block()
    blocks.append(block)
    add = time.process_time() - started
    started = time.process_time()
    lines = [b.line() for b in blocks]
    line = time.process_time() - started
    squeeze, started = frames.compressor(), time.process_time()
    for text in lines:
        squeeze.compress(text)
    zstd = time.process_time() - started
    n = len(events) / 1e6
    return {"Block.add": add / n, "columnar JSON": line / n, "zstd": zstd / n}


def read_speed(day: Path) -> tuple[int, float]:
    started = time.perf_counter()
    count = sum(1 for _ in reader.ticks(day))
    return count, count / (time.perf_counter() - started)


def measure(n: int, rate: int, strikes: int, root: Path) -> dict[str, Any]:
    events, bodies, instruments = make_ticks(n, strikes)
    started = time.process_time()
    for body in bodies:
        Event.decode(body)
    decode_us = (time.process_time() - started) / n * 1e6
    legacy_bytes = sum(len(orjson.dumps({"id": e.id, "ts": e.ts, "type": e.type, "source": e.source, "seq": e.seq,
                                         "trace": e.trace, "key": e.key, "payload": e.payload})) + 1 for e in events)
    cpu, day = journal_cpu(events, rate, root)
    own_us = cpu / n * 1e6
    live_bytes = (day / MARKET).stat().st_size
    live_count, live_read = read_speed(day)
    compact_day(day, keep_market=True)
    compacted_bytes = (day / MARKET).stat().st_size
    compacted_count, compacted_read = read_speed(day)
    assert live_count == compacted_count == n, (live_count, compacted_count, n)
    per_tick_us = own_us + decode_us
    parts = breakdown(events)
    parts["the rest (dispatch, writes, fdatasync)"] = own_us - sum(parts.values())
    return {
        "ticks": n, "instruments": instruments, "frame_period_ticks": rate,
        "bytes_per_tick": {"events.jsonl (before)": legacy_bytes / n, "market.zst live": live_bytes / n,
                           "market.zst compacted": compacted_bytes / n},
        "journal_cpu_ms_per_1k_ticks": {"own": own_us, "bus decode": decode_us, "total": per_tick_us},
        "core_share_at_20k_ticks_s": per_tick_us * 20_000 / 1e6,
        "sustained_ticks_s_one_core": 1e6 / per_tick_us,
        "replay_ticks_s": {"live": live_read, "compacted": compacted_read},
        "order_path_bytes": (day / EVENTS).stat().st_size,
        "own_work_us_per_tick": parts,
    }


def render(r: dict[str, Any]) -> str:
    b, c, rd = r["bytes_per_tick"], r["journal_cpu_ms_per_1k_ticks"], r["replay_ticks_s"]
    return "\n".join([
        f"{r['ticks']:,} ticks of {r['instruments']} instruments, the journal's timer (frame, fdatasync, disk check) "
        f"every {r['frame_period_ticks']:,} ticks, frames of at most {FRAME_EVENTS:,}",
        "",
        "| measure | result | target |",
        "|---|---|---|",
        f"| bytes per tick, events.jsonl as before | {b['events.jsonl (before)']:.0f} | |",
        f"| bytes per tick, market.zst while the day runs | {b['market.zst live']:.1f} | <= 40 |",
        f"| bytes per tick, market.zst compacted | {b['market.zst compacted']:.1f} | <= 40 |",
        f"| journal CPU per 1k ticks: own work + bus decode | {c['own']:.2f} + {c['bus decode']:.2f} "
        f"= {c['total']:.2f} ms | |",
        f"| share of one core at 20k ticks/s | {r['core_share_at_20k_ticks_s']:.0%} | <= 15% |",
        f"| ticks/s one core keeps up with | {r['sustained_ticks_s_one_core']:,.0f} | >= 20,000 |",
        f"| replay read, live / compacted | {rd['live']:,.0f} / {rd['compacted']:,.0f} ticks/s | >= 200,000 |",
        "",
        "own work per tick: " + ", ".join(f"{k} {v:.2f} us" for k, v in r["own_work_us_per_tick"].items()),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=20_000, help="ticks per timer period (1 s at this rate)")
    parser.add_argument("--strikes", type=int, default=100, help="NIFTY strikes a side in the universe")
    parser.add_argument("--dir", type=Path, help="where the day is written (default: a temporary directory)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        result = measure(args.ticks, args.rate, args.strikes, Path(tmp))
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
