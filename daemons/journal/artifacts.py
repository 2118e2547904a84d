"""The files of one journal day: a contract with algo-eod, `algoctl trace/replay` and traders' tools.

    <journal>/<YYYY-MM-DD>/events.jsonl   every bus event, one JSON envelope per line, in arrival order
    <journal>/<YYYY-MM-DD>/signals.csv    strategy.signal
    <journal>/<YYYY-MM-DD>/decisions.csv  risk.approved / risk.blocked
    <journal>/<YYYY-MM-DD>/orders.csv     execution.order: one row per order update; a client_id's last row is its state
    <journal>/<YYYY-MM-DD>/fills.csv      execution.fill: one row per fill (deduplicated by fill_id)

The day is the IST calendar date of the wall clock when the event was journaled. ``ts`` columns
are that wall time (ISO 8601, IST); ``exchange_time`` is the market's clock of the fill.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

from ..marketdata.session import IST

EVENTS = "events.jsonl"

COLUMNS: dict[str, tuple[str, ...]] = {
    "signals.csv": ("ts", "trace", "engine", "strategy", "symbol", "side", "quantity", "order_type", "limit_price",
                    "entry", "reason", "signal_id"),
    "decisions.csv": ("ts", "trace", "engine", "strategy", "symbol", "side", "quantity", "decision", "block_code",
                      "block_reason", "signal_id"),
    "orders.csv": ("ts", "client_id", "order_id", "engine", "strategy", "symbol", "instrument_type", "side",
                   "quantity", "order_type", "limit_price", "status", "filled_quantity", "average_price", "reason",
                   "trace"),
    "fills.csv": ("ts", "exchange_time", "fill_id", "order_id", "client_id", "engine", "strategy", "symbol",
                  "instrument_type", "side", "quantity", "price", "trace"),
}


def day_of(ts_ns: int) -> date:
    """The journal day an event (wall-clock ns) belongs to."""
    return datetime.fromtimestamp(ts_ns // 1_000_000_000, IST).date()  # whole seconds: no float rounding at midnight


def iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, IST).isoformat(timespec="microseconds")


def day_dir(journal: Path, day: date | str) -> Path:
    return journal / (day if isinstance(day, str) else day.isoformat())
