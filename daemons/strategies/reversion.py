"""RSI mean reversion, for equities: buy when oversold, sell when the bounce has come. Long only."""

from __future__ import annotations

from typing import Any

from .base import Signal, Strategy, Tick
from .indicators import RSI


class RsiReversion(Strategy):
    kind = "rsi_reversion"

    def __init__(self, name: str, *, symbol: str, quantity: int, period: int = 14, oversold: float = 30.0,
                 exit_above: float = 55.0) -> None:
        if not 0 < oversold < exit_above < 100:
            raise ValueError(f"need 0 < oversold < exit_above < 100, got {oversold} and {exit_above}")
        if quantity <= 0:
            raise ValueError("quantity must be positive")
        super().__init__(name, symbol=symbol, quantity=quantity, period=period, oversold=oversold, exit_above=exit_above)
        self.symbol, self.quantity, self.oversold, self.exit_above = symbol, quantity, oversold, exit_above
        self.rsi = RSI(period)
        self.last: float | None = None

    def watches(self) -> frozenset[str]:
        return frozenset({self.symbol})

    def on_tick(self, tick: Tick) -> list[Signal]:
        if tick.symbol != self.symbol:
            return []
        before, now = self.last, self.rsi.update(tick.last_price)
        self.last = now
        if before is None or now is None:
            return []
        held = self.position.get(self.symbol, 0)
        # Edge-triggered: one signal when RSI crosses a level, not one per tick while beyond it.
        if held == 0 and before >= self.oversold > now:
            why = f"RSI{self.rsi.period} {now:.1f} < {self.oversold:g}"
            return [self.signal(self.symbol, "BUY", self.quantity, why, entry=True)]
        if held > 0 and before <= self.exit_above < now:
            return [self.signal(self.symbol, "SELL", held, f"RSI{self.rsi.period} {now:.1f} > {self.exit_above:g}", entry=False)]
        return []

    def _state(self) -> dict[str, Any]:
        return {"rsi": dict(vars(self.rsi)), "last": self.last}

    def _load(self, state: dict[str, Any]) -> None:
        vars(self.rsi).update(state["rsi"])
        self.last = state["last"]
