"""Portfolios' intents on one symbol netted into one exchange order, and its fills allocated back.

Netting: the intents of a batch (one signal, or several on the same symbol) add up to one order of the
net lots; portfolios on the other side of the net are crossed internally, in step with the exchange
fills, so every portfolio of the order is equally complete (to the lot) at every moment.

Allocation of a fill of ``f`` lots (signed as the order), with ``r_i`` the lots portfolio i still has
to get and ``R = sum(r_i)`` (the order's unfilled net): each gets ``floor(r_i * f / R)`` lots (toward
minus infinity, in exact integers), and the lots left over (``f`` minus those floors: the sum of the
fractional parts, so fewer than the portfolios that have one) go one each to the largest fractional
parts, ties to the lower row. So the allocations sum to the fill
exactly, each is a whole number of lots with the sign of its intent, none exceeds what is still owed,
and the last fill completes every intent. A fill that is not a whole number of lots, or more than is
unfilled, is refused (``AllocationError``) and nothing changes.
"""

from __future__ import annotations

import numpy as np

from .book import Ints


class AllocationError(ValueError):
    pass


class NetOrder:
    """One symbol's exchange order for a batch of intents (signed lots per portfolio)."""

    def __init__(self, symbol: str, lot_size: int, *intents: Ints) -> None:
        if not intents:
            raise ValueError("a net order needs at least one batch of intents")
        self.symbol, self.lot_size = symbol, lot_size
        self.intents: Ints = np.sum(intents, axis=0, dtype=np.int64) if len(intents) > 1 else intents[0].astype(np.int64)
        self.lots = int(self.intents.sum())  # signed: the exchange order (0: crossed entirely inside)
        self.remaining: Ints = self.intents.copy()  # per portfolio, lots still to allocate

    @property
    def quantity(self) -> int:
        """The exchange order's quantity (units), its side the sign of ``lots``."""
        return abs(self.lots) * self.lot_size

    @property
    def unfilled(self) -> int:
        return int(self.remaining.sum())

    def allocate(self, filled: int) -> Ints:
        """A fill of ``filled`` units (positive) of the exchange order: each portfolio's signed units."""
        lots, odd = divmod(filled, self.lot_size)
        unfilled = self.unfilled
        if odd or filled <= 0 or lots > abs(unfilled):
            raise AllocationError(f"{self.symbol}: a fill of {filled} is not whole lots of {self.lot_size} within the "
                                  f"{abs(unfilled) * self.lot_size} unfilled")
        f = lots if unfilled > 0 else -lots
        share = self.remaining * f  # exact integers: r_i * f / R without rounding until the floor
        floors = share // unfilled
        left = f - int(floors.sum())  # the fractional parts' sum: >= 0, and fewer than the shares with one
        if left:
            fraction = np.abs(share - floors * unfilled)  # each fractional part, times |unfilled|
            floors[np.argsort(-fraction, kind="stable")[:left]] += 1
        self.remaining -= floors
        return floors * self.lot_size

    def cross(self) -> Ints:
        """A batch that nets to zero never reaches the exchange: every intent is filled internally."""
        if self.lots:
            raise AllocationError(f"{self.symbol}: {self.lots} lots net, not a complete cross")
        done, self.remaining = self.remaining, np.zeros_like(self.remaining)
        return done * self.lot_size
