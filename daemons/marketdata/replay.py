"""Replay: a recorded journal day, or a tick CSV, back onto the bus at its own pace (or faster).

A journal day is paced by when each tick was journaled (the envelope's ``ts``), so a compressed
paper session replays at the speed it ran; a CSV by its ``timestamp`` column (exchange time).
Ticks keep their recorded exchange time, so strategies and risk see the recorded session.
Only the bytes present when the replay opened are read: replaying the day being journaled now
can never feed on itself.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from ..journal_format import reader
from ..journal_format.layout import EVENTS, MARKET
from ..runtime.calendar import IST

CSV_REQUIRED = ("timestamp", "symbol", "last_price")
CSV_NUMBERS = {"token": int, "last_price": float, "bid": float, "ask": float, "volume": int, "oi": int,
               "strike": float, "lot_size": int, "tick_size": float, "bid_qty": int, "ask_qty": int, "last_qty": int}


ReplayError = reader.JournalError  # a journal day or a tick CSV that cannot be replayed; names the file


def source_file(path: Path) -> Path:
    """What is replayed: a journal day directory (its files, read by journal_format.reader), one of its
    files, or a tick CSV."""
    if not reader.files(path):
        raise ReplayError(f"{path} does not exist or is empty (a journal day directory, its {EVENTS} or {MARKET}, "
                          "or a tick CSV)")
    return path


def ticks(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(pace in ns, tick payload) in the order journaled."""
    file = source_file(path)
    return _csv(file) if file.suffix == ".csv" else reader.ticks(file)


def _csv(file: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(file, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise ReplayError(f"{file}: missing column(s) {', '.join(missing)}")
        for n, row in enumerate(reader, 2):
            try:
                yield _csv_tick(row)
            except (TypeError, ValueError) as exc:
                raise ReplayError(f"{file}:{n}: {exc}") from None


def _csv_tick(row: dict[str, str]) -> tuple[int, dict[str, Any]]:
    stamp = row["timestamp"]
    if stamp.isdigit():
        ns = int(stamp)
    else:
        when = datetime.fromisoformat(stamp)
        ns = int((when if when.tzinfo else when.replace(tzinfo=IST)).timestamp() * 1e9)
    last = float(row["last_price"])
    tick: dict[str, Any] = {"token": 0, "bid": last, "ask": last, "volume": 0, "oi": 0, "type": "EQ",
                            "underlying": row["symbol"], "strike": 0.0, "expiry": None}
    for key, value in row.items():
        if value not in ("", None):
            tick[key] = CSV_NUMBERS[key](value) if key in CSV_NUMBERS else value
    del tick["timestamp"]
    tick["exchange_ts"] = ns
    return ns, tick
