"""EMA crossover trend following, for futures: long above, short below (optional)."""

from __future__ import annotations

from typing import Any

from .base import Signal, Strategy, Tick
from .indicators import EMA


class EmaCrossover(Strategy):
    kind = "ema_crossover"

    def __init__(self, name: str, *, symbol: str, quantity: int, fast: int = 9, slow: int = 21,
                 allow_short: bool = True) -> None:
        if not 0 < fast < slow:
            raise ValueError(f"need 0 < fast < slow, got fast={fast} slow={slow}")
        if quantity <= 0:
            raise ValueError("quantity must be positive")
        super().__init__(name, symbol=symbol, quantity=quantity, fast=fast, slow=slow, allow_short=allow_short)
        self.symbol, self.quantity, self.allow_short = symbol, quantity, allow_short
        self.fast, self.slow = EMA(fast), EMA(slow)
        self.trend = 0  # +1 fast above slow, -1 below, 0 not known yet

    def on_tick(self, tick: Tick) -> list[Signal]:
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
        return self._go_to(self.quantity * trend if (trend > 0 or self.allow_short) else 0,
                           f"EMA{self.fast.period} crossed {'above' if trend > 0 else 'below'} EMA{self.slow.period}")

    def _go_to(self, target: int, why: str) -> list[Signal]:
        held = self.position.get(self.symbol, 0)
        out = []
        if held and (target == 0 or (held > 0) != (target > 0)):
            out.append(self.signal(self.symbol, "SELL" if held > 0 else "BUY", abs(held), f"exit: {why}", entry=False))
            held = 0
        if target != held:
            out.append(self.signal(self.symbol, "BUY" if target > held else "SELL", abs(target - held), f"entry: {why}", entry=True))
        return out

    def _state(self) -> dict[str, Any]:
        return {"fast": dict(vars(self.fast)), "slow": dict(vars(self.slow)), "trend": self.trend}

    def _load(self, state: dict[str, Any]) -> None:
        vars(self.fast).update(state["fast"])
        vars(self.slow).update(state["slow"])
        self.trend = state["trend"]
