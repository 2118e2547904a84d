"""What the journal's fsync policy costs: events/s appended through DayFiles with an fdatasync
after every batch (what orders and fills get) versus at most once a second (ticks).

    .venv/bin/python bench/journal/fsync.py [--dir DIR] [--events N] [--batch N]

Run it on the disk that holds /var/lib/algo: tmpfs makes fsync free and the numbers meaningless.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from daemons.journal.writer import DayFiles
from daemons.runtime.envelope import EventFactory

TICK = {"token": 256265, "symbol": "NIFTY26112624350CE", "exchange": "NFO", "last_price": 197.85, "last_qty": 75,
        "bid": 197.8, "ask": 197.9, "bid_qty": 1500, "ask_qty": 2250, "volume": 1_234_500, "oi": 3_400_000,
        "exchange_ts": 1_763_610_000_000_000_000, "type": "CE", "underlying": "NIFTY", "strike": 24350.0,
        "expiry": "2026-11-26", "lot_size": 75, "tick_size": 0.05}


def run(folder: Path, events: int, batch: int, every_batch: bool) -> tuple[float, list[float]]:
    stamp = EventFactory("marketdata").stamp
    day = DayFiles(folder)
    syncs: list[float] = []
    last_sync = time.perf_counter()
    started = time.perf_counter()
    for _n in range(0, events, batch):
        for _ in range(batch):
            day.add(stamp("marketdata.tick", TICK)[0])
        day.write(sync=False)
        now = time.perf_counter()
        if every_batch or now - last_sync >= 1.0:
            day.write(sync=True)
            syncs.append(time.perf_counter() - now)
            last_sync = time.perf_counter()
    elapsed = time.perf_counter() - started
    day.close()
    return events / elapsed, syncs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="where to write (default /var/tmp)")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=50, help="events per bus read")
    args = parser.parse_args()
    for every_batch in (True, False):
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            rate, syncs = run(Path(tmp), args.events, args.batch, every_batch)
        policy = "fdatasync every batch" if every_batch else "fdatasync at most every 1 s"
        p50 = statistics.median(syncs) * 1e3 if syncs else 0.0
        p99 = sorted(syncs)[int(len(syncs) * 0.99) - 1] * 1e3 if len(syncs) > 1 else p50
        print(f"{policy:<30} {rate:>10,.0f} events/s  fdatasync p50 {p50:.3f} ms  p99 {p99:.3f} ms  ({len(syncs)} syncs)")


if __name__ == "__main__":
    main()
