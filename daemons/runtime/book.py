"""Positions and P&L, built from fills and marked to the last price (risk and the engines)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Position:
    quantity: int = 0  # signed: long > 0, short < 0
    average: float = 0.0  # average price of the open quantity
    realised: float = 0.0

    def fill(self, signed_qty: int, price: float) -> None:
        q = self.quantity
        if q == 0 or (q > 0) == (signed_qty > 0):  # opening or adding
            total = q + signed_qty
            self.average = (self.average * q + price * signed_qty) / total
            self.quantity = total
            return
        closing = min(abs(q), abs(signed_qty))
        self.realised += closing * (price - self.average) * (1 if q > 0 else -1)
        self.quantity = q + signed_qty
        if self.quantity == 0:
            self.average = 0.0
        elif (self.quantity > 0) != (q > 0):
            self.average = price  # flipped through zero: the new side opened at this price

    def unrealised(self, mark: float | None) -> float:
        return 0.0 if mark is None or not self.quantity else (mark - self.average) * self.quantity


class PositionBook:
    """Positions per (owner, symbol); P&L per owner and in total. Risk owns by engine, an engine by strategy."""

    def __init__(self) -> None:
        self.positions: dict[tuple[str, str], Position] = {}
        self.marks: dict[str, float] = {}

    def fill(self, engine: str, symbol: str, side: str, quantity: int, price: float) -> Position:
        pos = self.positions.setdefault((engine, symbol), Position())
        pos.fill(quantity if side == "BUY" else -quantity, price)
        return pos

    def new_day(self) -> None:
        """A new trading day: open positions carry over at their average price, realised P&L restarts at 0
        (daily loss limits are about today's P&L)."""
        self.positions = {k: Position(p.quantity, p.average) for k, p in self.positions.items() if p.quantity}

    def quantity(self, symbol: str) -> int:
        return sum(p.quantity for (_, s), p in self.positions.items() if s == symbol)

    def open_symbols(self) -> set[str]:
        return {s for (_, s), p in self.positions.items() if p.quantity}

    def pnl(self, engine: str | None = None) -> tuple[float, float]:
        """(realised, unrealised) for one owner (the key's first part: an engine in risk, a strategy
        in an engine), or for everything."""
        realised = unrealised = 0.0
        for (e, symbol), p in self.positions.items():
            if engine is None or e == engine:
                realised += p.realised
                unrealised += p.unrealised(self.marks.get(symbol))
        return realised, unrealised
