"""The files of one journal day: a contract with algo-eod, `algoctl trace/replay` and traders' tools.

    <journal>/<YYYY-MM-DD>/events.jsonl   the order path: every bus event but market data, features, heartbeats,
                                          one JSON envelope per line, in arrival order, fsynced
    <journal>/<YYYY-MM-DD>/market.zst     market data, features, heartbeats (``MARKET_PREFIXES``): zstd frames, each
                                          one line of columnar JSON (frames.py); ``zstdcat`` prints them
    <journal>/<YYYY-MM-DD>/signals.csv    strategy.signal
    <journal>/<YYYY-MM-DD>/decisions.csv  risk.approved / risk.blocked
    <journal>/<YYYY-MM-DD>/orders.csv     execution.order: one row per order update; a client_id's last row is its state
    <journal>/<YYYY-MM-DD>/fills.csv      execution.fill: one row per fill (deduplicated by fill_id)

Days written before market.zst existed hold their ticks in events.jsonl; reader.py reads both.
The day is the IST calendar date of the wall clock when the event was journaled. ``ts`` columns
are that wall time (ISO 8601, IST); ``exchange_time`` is the market's clock of the fill.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

from ..runtime.calendar import IST
from ..runtime.envelope import MARKET_DATA_PREFIXES

EVENTS = "events.jsonl"
MARKET = "market.zst"
# Topics journaled compactly, and shed first when the disk runs low: everything else is the order path.
MARKET_PREFIXES = (*MARKET_DATA_PREFIXES, "health.")  # the bus's market-data lane, and heartbeats
KINDS = ("market", "orders")  # what retention and the disk metrics count separately


def kind_of(topic: str) -> str:
    return "market" if topic.startswith(MARKET_PREFIXES) else "orders"


def kind_of_file(name: str) -> str:
    return "market" if name.startswith(MARKET) else "orders"  # market.zst and its compaction's temporary file

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


def is_day(folder: Path) -> bool:
    """A journal day directory: named by its date and holding either file of events."""
    try:
        date.fromisoformat(folder.name)
    except ValueError:
        return False
    return (folder / EVENTS).is_file() or (folder / MARKET).is_file()
