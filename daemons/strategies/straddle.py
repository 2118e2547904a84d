"""Short straddle with a stop, for index options: sell the at-the-money call and put once a day,
buy them back when the combined premium rises by ``stop_pct`` or at ``exit_at``."""

from __future__ import annotations

from datetime import datetime, time
from typing import Any

from ..runtime.calendar import IST
from .base import Signal, Strategy, Tick


class ShortStraddle(Strategy):
    kind = "short_straddle"

    def __init__(self, name: str, *, underlying: str, spot: str, quantity: int, step: float,
                 enter_at: str = "09:20", exit_at: str = "15:15", stop_pct: float = 30.0) -> None:
        if quantity <= 0 or step <= 0 or stop_pct <= 0:
            raise ValueError("quantity, step and stop_pct must be positive")
        super().__init__(name, underlying=underlying, spot=spot, quantity=quantity, step=step,
                         enter_at=enter_at, exit_at=exit_at, stop_pct=stop_pct)
        self.underlying, self.spot_symbol, self.quantity, self.step = underlying, spot, quantity, step
        self.enter_at, self.exit_at = time.fromisoformat(enter_at), time.fromisoformat(exit_at)
        self.stop_pct = stop_pct
        self.spot: float | None = None
        self.premium: dict[str, float] = {}  # option symbol -> last price
        self.chain: dict[tuple[float, str], str] = {}  # (strike, CE|PE) -> symbol, nearest expiry
        self.expiry: str | None = None
        self.legs: list[str] = []
        self.entry_premium = 0.0
        self.done_on: str | None = None  # the day it traded; once a day

    def watches(self) -> frozenset[str]:
        return frozenset({self.spot_symbol, self.underlying})

    def on_tick(self, tick: Tick) -> list[Signal]:
        if tick.symbol == self.spot_symbol:
            self.spot = tick.last_price
        elif tick.underlying == self.underlying and tick.type in ("CE", "PE") and tick.expiry:
            self._note_option(tick)
        else:
            return []
        when = datetime.fromtimestamp(tick.exchange_ts / 1e9, IST)
        if self.legs:
            return self._manage(when)
        if self.done_on != when.date().isoformat() and self.enter_at <= when.time() < self.exit_at:
            return self._enter(when)
        return []

    def _note_option(self, tick: Tick) -> None:
        if self.expiry is None or tick.expiry < self.expiry:  # type: ignore[operator]
            self.expiry, self.chain = tick.expiry, {}
        if tick.expiry == self.expiry:
            self.chain[(tick.strike, tick.type)] = tick.symbol
        self.premium[tick.symbol] = tick.last_price

    def _enter(self, when: datetime) -> list[Signal]:
        if self.spot is None:
            return []
        atm = round(self.spot / self.step) * self.step
        legs = [self.chain.get((atm, "CE")), self.chain.get((atm, "PE"))]
        if None in legs or any(leg not in self.premium for leg in legs):
            return []  # the chain around the money has not ticked yet
        self.legs = [leg for leg in legs if leg]
        self.entry_premium = sum(self.premium[leg] for leg in self.legs)
        self.done_on = when.date().isoformat()
        why = f"sell {atm:g} straddle at {self.entry_premium:.2f}"
        return [self.signal(leg, "SELL", self.quantity, why, entry=True) for leg in self.legs]

    def _manage(self, when: datetime) -> list[Signal]:
        now = sum(self.premium[leg] for leg in self.legs)
        if now >= self.entry_premium * (1 + self.stop_pct / 100):
            why = f"stop: premium {now:.2f} >= {self.entry_premium:.2f} + {self.stop_pct:g}%"
        elif when.time() >= self.exit_at:
            why = f"time exit at {self.exit_at:%H:%M}"
        else:
            return []
        legs, self.legs = self.legs, []
        return [self.signal(leg, "BUY", self.quantity, why, entry=False) for leg in legs]

    def _state(self) -> dict[str, Any]:
        return {"legs": self.legs, "entry_premium": self.entry_premium, "done_on": self.done_on}

    def _load(self, state: dict[str, Any]) -> None:
        self.legs, self.entry_premium, self.done_on = list(state["legs"]), state["entry_premium"], state["done_on"]
