"""EMA crossover trend following, for futures: long above, short below (optional).

Name the contract with ``symbol``, or give ``underlying`` to trade its front-month future (the
nearest expiry that ticks), which keeps a config valid across expiries.
"""

from __future__ import annotations

from typing import Any

from .base import Signal, Strategy, Tick
from .indicators import EMA


class EmaCrossover(Strategy):
    kind = "ema_crossover"

    def __init__(self, name: str, *, quantity: int, symbol: str | None = None, underlying: str | None = None,
                 fast: int = 9, slow: int = 21, allow_short: bool = True) -> None:
        if (symbol is None) == (underlying is None):
            raise ValueError("give exactly one of symbol and underlying")
        if not 0 < fast < slow:
            raise ValueError(f"need 0 < fast < slow, got fast={fast} slow={slow}")
        if quantity <= 0:
            raise ValueError("quantity must be positive")
        super().__init__(name, symbol=symbol, underlying=underlying, quantity=quantity, fast=fast, slow=slow,
                         allow_short=allow_short)
        self.symbol, self.underlying = symbol or "", underlying
        self.quantity, self.allow_short = quantity, allow_short
        self.expiry = ""
        self.fast, self.slow = EMA(fast), EMA(slow)
        self.trend = 0  # +1 fast above slow, -1 below, 0 not known yet

    def on_tick(self, tick: Tick) -> list[Signal]:
        if self.underlying is not None and not self.position.get(self.symbol):
            self._front_month(tick)  # while flat: a position must never jump contracts
        if tick.symbol != self.symbol:
            return []
        fast, slow = self.fast.update(tick.last_price), self.slow.update(tick.last_price)
        if fast is None or slow is None or fast == slow:
            return []
        trend = 1 if fast > slow else -1
        crossed = self.trend != 0 and trend != self.trend
        self.trend = trend
        if not crossed:
            return []
        return self.go_to(self.symbol, self.quantity * trend if (trend > 0 or self.allow_short) else 0,
                          f"EMA{self.fast.period} crossed {'above' if trend > 0 else 'below'} EMA{self.slow.period}")

    def watches(self) -> frozenset[str]:
        return frozenset({self.underlying} if self.underlying else {self.symbol})  # a future's ticks name its underlying

    def _front_month(self, tick: Tick) -> None:
        """Trade the nearest-expiry future of the underlying among those that tick."""
        if (tick.type == "FUT" and tick.underlying == self.underlying and tick.expiry
                and (not self.expiry or tick.expiry < self.expiry)):
            self.expiry, self.symbol = tick.expiry, tick.symbol

    def _state(self) -> dict[str, Any]:
        return {"fast": dict(vars(self.fast)), "slow": dict(vars(self.slow)), "trend": self.trend,
                "symbol": self.symbol, "expiry": self.expiry}

    def _load(self, state: dict[str, Any]) -> None:
        vars(self.fast).update(state["fast"])
        vars(self.slow).update(state["slow"])
        self.trend = state["trend"]
        self.symbol, self.expiry = state.get("symbol", self.symbol), state.get("expiry", self.expiry)
