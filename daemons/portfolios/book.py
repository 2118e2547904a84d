"""Every portfolio's definition and positions as arrays (one row per portfolio), so one signal is
decided for all of them in a few numpy operations (sizing.py) and a fill applied to all at once.

Position arithmetic is ``runtime/book.Position``'s (average price of the open quantity, realised P&L
on the closing part, a flip through zero opens at the fill price), element-wise."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from .portfolio import Portfolio, Reason

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]


class Positions:
    """One symbol's position in every portfolio, in units (lots x lot size)."""

    __slots__ = ("average", "quantity")

    def __init__(self, count: int) -> None:
        self.quantity: Ints = np.zeros(count, dtype=np.int64)
        self.average: Floats = np.zeros(count, dtype=np.float64)


class PortfolioBook:
    def __init__(self, portfolios: Sequence[Portfolio]) -> None:
        ids = [p.id for p in portfolios]
        if len(set(ids)) != len(ids):
            raise ValueError("portfolio ids must be unique")
        self.ids = ids
        self.capital: Floats = np.array([p.capital for p in portfolios], dtype=np.float64)
        self.risk_fraction: Floats = np.array([p.risk_fraction for p in portfolios], dtype=np.float64)
        self.max_lots: Ints = np.array([p.max_lots for p in portfolios], dtype=np.int64)
        self.max_order_value: Floats = np.array([p.max_order_value for p in portfolios], dtype=np.float64)
        self.daily_loss_limit: Floats = np.array([p.daily_loss_limit for p in portfolios], dtype=np.float64)
        self.enabled: Mask = np.array([p.enabled for p in portfolios], dtype=np.bool_)
        # what one entry may be worth: the smaller of its share of capital and the order-value limit
        self.entry_cap: Floats = np.minimum(self.capital * self.risk_fraction, self.max_order_value)
        self._followers: dict[str, Mask] = {}
        for n, p in enumerate(portfolios):
            for strategy in p.strategies:
                self._followers.setdefault(strategy, np.zeros(len(ids), dtype=np.bool_))[n] = True
        self._none: Mask = np.zeros(len(ids), dtype=np.bool_)
        self.realised: Floats = np.zeros(len(ids), dtype=np.float64)  # today's
        self.positions: dict[str, Positions] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def standing(self) -> npt.NDArray[np.uint8]:
        """Each portfolio's own reason to refuse entries, whatever the signal: DISABLED, LOSS_LIMIT or OK."""
        u8 = np.uint8
        standing: npt.NDArray[np.uint8] = np.maximum((~self.enabled).view(u8) * u8(Reason.DISABLED),
                                                     (self.realised <= -self.daily_loss_limit).view(u8) * u8(Reason.LOSS_LIMIT))
        return standing

    def followers(self, strategy: str) -> Mask:
        return self._followers.get(strategy, self._none)

    def position(self, symbol: str) -> Positions:
        pos = self.positions.get(symbol)
        if pos is None:
            pos = self.positions[symbol] = Positions(len(self.ids))
        return pos

    def fill(self, symbol: str, quantity: Ints, price: float) -> None:
        """Apply each portfolio's signed quantity (units; 0 for none) filled at ``price``."""
        pos = self.position(symbol)
        q, avg = pos.quantity, pos.average
        total = q + quantity
        adding = (q == 0) | (np.sign(q) == np.sign(quantity))
        closing = ~adding & (quantity != 0)
        closed = np.minimum(np.abs(q), np.abs(quantity))
        self.realised += np.where(closing, closed * (price - avg) * np.sign(q), 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            added = (avg * q + price * quantity) / total
        flipped = closing & (total != 0) & (np.sign(total) != np.sign(q))
        avg[:] = np.where(adding & (total != 0), added, np.where(flipped, price, np.where(total == 0, 0.0, avg)))
        q[:] = total

    def new_day(self) -> None:
        """Open positions carry over at their average price; realised P&L restarts at 0."""
        self.realised[:] = 0.0
