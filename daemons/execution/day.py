"""One trading day of algo-execution: its ledger (the write-ahead log and the day's orders) and, on paper, the
simulated broker's book. Orders are valid for the day, so both open together at the roll and close together at
its end; a state disk that refuses either leaves no day open (new orders are refused meanwhile)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Counter

from ..runtime.config import ExecutionSection
from .ledger import Ledger
from .orders import Order
from .paper import PaperBroker


@dataclass(eq=False)
class Day:
    date: datetime.date
    ledger: Ledger
    paper: PaperBroker | None  # None with Kite, whose book is its own

    @classmethod
    def open(cls, day: datetime.date, folder: Path, section: ExecutionSection, illegal: Counter, *, paper: bool) -> Day:
        """The day's files under ``folder`` (the paper book under ``paper_dir`` if one is set)."""
        book = None
        if paper:
            books = section.paper_dir / day.isoformat() if section.paper_dir else folder
            book = PaperBroker(books / "broker.jsonl", section, day)
        try:
            ledger = Ledger(folder / "orders.wal", fsync=section.fsync, illegal=illegal,
                            floor=section.refuse_free_mb << 20)
        except OSError:
            if book is not None:
                book.close()
            raise
        return cls(day, ledger, book)

    @property
    def orders(self) -> dict[str, Order]:
        return self.ledger.orders

    def close_files(self) -> None:
        self.ledger.close_file()
        if self.paper is not None:
            self.paper.close()
