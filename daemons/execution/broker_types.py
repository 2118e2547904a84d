"""What a broker says about our orders, in one shape for the paper broker and Kite alike.

``BrokerOrder`` and ``Trade`` are the broker's view (the paper simulator builds them, the Kite
adapter normalizes Kite's JSON into them); ``BrokerBook`` is what reconciliation reads. The
broker's statuses are also the order ledger's, which adds only ``NEW`` (logged, not yet answered).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

OPEN, COMPLETE, REJECTED, CANCELLED = "OPEN", "COMPLETE", "REJECTED", "CANCELLED"
FINAL = frozenset({COMPLETE, REJECTED, CANCELLED})  # the broker is done with the order


@dataclass
class BrokerOrder:
    order_id: str
    tag: str
    symbol: str
    side: str
    quantity: int
    order_type: str
    price: float | None
    placed_ns: int
    status: str = OPEN
    filled: int = 0
    average: float = 0.0
    reason: str = ""
    trades: int = 0

    @property
    def pending(self) -> int:
        return self.quantity - self.filled


@dataclass(frozen=True)
class Trade:
    trade_id: str
    order_id: str
    tag: str
    symbol: str
    side: str
    quantity: int
    price: float
    exchange_ts: int


class BrokerBook(Protocol):
    """What reconciliation reads: the paper broker and Kite's ``KiteBook`` both answer it."""

    @property
    def by_tag(self) -> Mapping[str, BrokerOrder]:
        """Every order of the day that bears a tag, by tag (reconciliation only reads it)."""

    def find(self, tag: str) -> BrokerOrder | None: ...

    def trades_of(self, order_id: str) -> list[Trade]: ...
