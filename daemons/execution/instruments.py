"""What execution knows of the instruments it trades, and the orders waiting to learn it.

An approval brings its instrument's facts (``daemons/runtime/instrument.py``), so execution reads the
ticks only of what it trades (paper fills, margin marks), never the universe's. An approval without
them (risk's own flatten order, a strategy trading a symbol its engine reads no tick of) is logged as
any order, then waits here for the first tick of its symbol: it is never sent with a guessed exchange
or lot size, and one that waits longer than ``max_order_age_sec`` is refused, not sent late.
"""

from __future__ import annotations

from ..runtime.instrument import InstrumentFacts
from .orders import Order


class Instruments:
    """Facts by symbol, first come (an instrument does not change during the day), and the parked orders."""

    def __init__(self) -> None:
        self.facts: dict[str, InstrumentFacts] = {}
        self.parked: dict[str, list[tuple[float, Order]]] = {}  # symbol -> (when parked, monotonic s; order)

    def __contains__(self, symbol: str) -> bool:
        return symbol in self.facts

    def get(self, symbol: str) -> InstrumentFacts | None:
        return self.facts.get(symbol)

    def learn(self, symbol: str, facts: InstrumentFacts) -> list[Order]:
        """Remember ``facts`` if they are new; the orders that waited for them, now with their type and exchange."""
        if symbol in self.facts:
            return []
        self.facts[symbol] = facts
        waiting = [order for _, order in self.parked.pop(symbol, ())]
        for order in waiting:
            order.instrument_type, order.exchange = facts.type, facts.exchange
        return waiting

    def park(self, order: Order, now: float) -> None:
        self.parked.setdefault(order.symbol, []).append((now, order))

    def expired(self, now: float, max_age: float) -> list[Order]:
        """Parked orders that waited more than ``max_age`` seconds, taken out (to be refused)."""
        out = []
        for symbol, waiting in list(self.parked.items()):
            out += [order for since, order in waiting if now - since > max_age]
            kept = [(since, order) for since, order in waiting if now - since <= max_age]
            if kept:
                self.parked[symbol] = kept
            else:
                del self.parked[symbol]
        return out

    def take_parked(self) -> list[Order]:
        """Every parked order, taken out (at the day's end: refused, never carried into the next day)."""
        out = [order for waiting in self.parked.values() for _, order in waiting]
        self.parked.clear()
        return out

    @property
    def waiting(self) -> int:
        return sum(len(w) for w in self.parked.values())
