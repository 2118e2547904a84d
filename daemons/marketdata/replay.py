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

import orjson

from ..journal.artifacts import EVENTS
from .session import IST

TICK = b'"marketdata.tick"'
CSV_REQUIRED = ("timestamp", "symbol", "last_price")
CSV_NUMBERS = {"token": int, "last_price": float, "bid": float, "ask": float, "volume": int, "oi": int,
               "strike": float, "lot_size": int, "tick_size": float, "bid_qty": int, "ask_qty": int, "last_qty": int}


class ReplayError(ValueError):
    pass


def source_file(path: Path) -> Path:
    """A journal day directory stands for its events.jsonl."""
    file = path / EVENTS if path.is_dir() else path
    if not file.is_file():
        raise ReplayError(f"{file} does not exist (a journal day directory, its {EVENTS}, or a tick CSV)")
    return file


def ticks(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(pace in ns, tick payload) in file order."""
    file = source_file(path)
    return _csv(file) if file.suffix == ".csv" else _journal(file)


def _journal(file: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    size = file.stat().st_size
    with open(file, "rb") as f:
        read = 0
        for n, line in enumerate(f, 1):
            read += len(line)
            if read > size or not line.endswith(b"\n"):
                return  # written after we opened it, or a torn last line
            if TICK not in line:
                continue
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ReplayError(f"{file}:{n}: not a JSON event: {exc}") from None
            if event.get("type") == "marketdata.tick":
                yield event["ts"], event["payload"]


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
