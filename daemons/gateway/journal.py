"""What the REST API reads from a journal day: orders, fills, positions and P&L.

The journal's CSVs are the record (journal_format/layout.py); positions and P&L are algo-eod's
report of the day so far (the same arithmetic the end-of-day report uses, marked to the day's last
ticks), so the page and the report never disagree. Called in a worker thread: a day's market data
can take a while to read, and the event loop also feeds the watchdog.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

from ..eod.report import ReportError, build_report, rows
from ..journal_format.layout import day_dir
from ..runtime.calendar import IST


class DayNotFound(LookupError):
    pass


def today() -> date:
    return datetime.now(IST).date()


def folder(journal: Path, day: date) -> Path:
    path = day_dir(journal, day)
    if not path.is_dir():
        raise DayNotFound(f"no journal for {day.isoformat()}")
    return path


def orders(journal: Path, day: date) -> list[dict[str, str]]:
    """Each order's latest row (orders.csv holds one row per update), in the order orders were first seen."""
    latest: dict[str, dict[str, str]] = {}
    for _, row in rows(folder(journal, day) / "orders.csv"):
        latest[row["client_id"]] = row
    return list(latest.values())


def fills(journal: Path, day: date) -> list[dict[str, str]]:
    return [row for _, row in rows(folder(journal, day) / "fills.csv")]


def report(journal: Path, day: date, product: str) -> dict[str, Any]:
    """algo-eod's report of the day so far: positions, P&L by engine, strategy and symbol."""
    return build_report(folder(journal, day), product)


__all__ = ["DayNotFound", "ReportError", "fills", "orders", "report", "today"]
