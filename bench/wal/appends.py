#!/usr/bin/env python3
"""The write-ahead log's cost: appends/s with fdatasync per record (execution's default) and
without, the time to open (read and check) a day of 20,000 records, and what a paper approval's
records cost before its order event can go out: the intent, the paper book's record and the answer,
each fdatasync'ed (as until 2026-12-04), against the intent alone (the other two written, synced after).

    .venv/bin/python bench/wal/appends.py

Results: bench/README.md.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from daemons.runtime.wal import RecordLog

INTENT = {"op": "new", "client_id": "ABCDEFGHIJKLMNOPQRST", "signal_id": "rsi-infy:2026-11-20:123",
          "engine": "equity", "strategy": "rsi-infy", "symbol": "INFY", "side": "BUY", "quantity": 10,
          "order_type": "MARKET", "limit_price": None, "instrument_type": "EQ", "exchange": "NSE",
          "trace": "t-123456", "tick_ts": 1763445600123456789}


def appends_per_second(fsync: bool, n: int) -> float:
    best = 0.0
    for _ in range(3):
        with tempfile.TemporaryDirectory(dir="/var/tmp") as d:  # a disk, not a tmpfs
            log = RecordLog(Path(d) / "orders.wal", fsync=fsync)
            started = time.perf_counter()
            for _ in range(n):
                log.append(INTENT)
            best = max(best, n / (time.perf_counter() - started))
            log.close()
    return best


def open_seconds(n: int) -> float:
    with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
        path = Path(d) / "orders.wal"
        log = RecordLog(path, fsync=False)
        for _ in range(n):
            log.append(INTENT)
        log.close()
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            RecordLog(path, fsync=False).close()
            best = min(best, time.perf_counter() - started)
    return best


def approval_records_us(deferred: bool, n: int) -> list[float]:
    """p50 and p99 (µs) of the three appends of one paper approval until its order event may be published."""
    with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
        wal, book = RecordLog(Path(d) / "orders.wal"), RecordLog(Path(d) / "broker.jsonl")
        took = []
        for _ in range(n):
            started = time.perf_counter()
            wal.append(INTENT)
            book.append(INTENT, sync=not deferred)
            wal.append(INTENT, sync=not deferred)
            took.append((time.perf_counter() - started) * 1e6)
            wal.sync()  # after the order event: not on its clock
            book.sync()
        wal.close()
        book.close()
    took.sort()
    return [took[n // 2], took[n * 99 // 100]]


if __name__ == "__main__":
    for deferred in (False, True):
        p50, p99 = approval_records_us(deferred, 1000)
        label = "intent synced, 2 written" if deferred else "3 records fdatasync'ed"
        print(f"approval records, {label}: p50 {p50:,.0f} µs, p99 {p99:,.0f} µs")
    print(f"fdatasync per record: {appends_per_second(True, 500):>12,.0f} appends/s")
    print(f"no fsync:             {appends_per_second(False, 50_000):>12,.0f} appends/s")
    print(f"open a day of 20,000 records: {open_seconds(20_000) * 1e3:.1f} ms")
