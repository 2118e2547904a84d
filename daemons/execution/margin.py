"""Margin, checked right before an order is sent: an order needing more margin than is available is
refused with the reason (closed REJECTED by us, published as ``execution.reject``), never sent.

Why in execution, right before the send, and not in algo-risk: in live mode the margin is Kite's to
say (``POST /margins/orders``, which counts the account's positions and open orders) and only
execution may talk to Kite (its credentials, and the one unit of the two allowed off loopback); it
is also the last moment before the order exists, after the order-rate queue, so an order that waited
is checked against the margin of that moment; and a logged order sent again at a restart passes the
same check. Risk keeps sizing by capital and limits; margin is what the account can carry now.

Only what adds exposure needs margin. Per symbol, today's exposure ``e`` is the net filled quantity
plus what the other working orders would add; an order of signed quantity ``q`` adds
``max(0, |e + q| - |e|)`` units, so an exit (or the closing part of a reversal) needs none and always
goes out, as in risk.

Paper model (``[daemons.execution.margin]``), SPAN-like percentages of notional:

    EQ            equity_pct of price x units
    FUT           futures_pct of price x units
    CE/PE bought  the premium: price x units
    CE/PE sold    option_short_pct of strike x units (the strike stands for the underlying's price)
    other         price x units (all of it: an unknown instrument is not leveraged)

``price`` is the order's limit price, else the symbol's last tick (before its first, the approval's
tick price); available is ``funds`` less what today's exposure needs by the same rule at the last
prices. A market order of a symbol with no price at all (one sent again by reconciliation, before the
feed's first tick) cannot be judged and goes: the paper broker fills it only on a tick anyway.
"""

from __future__ import annotations

from typing import Any

from ..runtime.config import MarginSection
from .broker_types import OPEN
from .orders import NEW, Order


class Exposure:
    """Today's exposure per symbol (signed units: what is filled, plus the rest of what still works), kept as
    the ledger changes its orders. The check before every send reads it: a pass over the day's orders there
    cost ~0.2 ms an order at 150 of them, and grew with the day."""

    __slots__ = ("kinds", "units")

    def __init__(self) -> None:
        self.units: dict[str, int] = {}
        self.kinds: dict[str, str] = {}  # symbol -> its instrument type, for the margin it holds

    def count(self, order: Order, before: int = 0) -> None:
        """``order`` is new (``before`` 0) or changed from an exposure of ``before``."""
        self.units[order.symbol] = self.units.get(order.symbol, 0) + exposure_of(order) - before
        self.kinds[order.symbol] = order.instrument_type

    def others(self, order: Order) -> int:
        """The exposure in ``order``'s symbol of the day's other orders (``order`` is one of the day's)."""
        return self.units.get(order.symbol, 0) - exposure_of(order)


def added(order: Order, exposure: Exposure) -> int:
    """Units of ``order`` (one of the day's orders) that add to today's exposure in its symbol (0 for an exit)."""
    return _adds(order, exposure.others(order))


def _adds(order: Order, exposure: int) -> int:
    """Units of ``order`` that add to ``exposure`` (signed) in its symbol."""
    q = order.quantity if order.side == "BUY" else -order.quantity
    return max(0, abs(exposure + q) - abs(exposure))


def exposure_of(o: Order) -> int:
    """Signed: what is filled, plus the rest while the order still works."""
    working = o.quantity if o.status in (NEW, OPEN) else o.filled
    return working if o.side == "BUY" else -working


class PaperMargin:
    """The paper model: what an order needs, against the funds less what today's exposure holds."""

    def __init__(self, section: MarginSection) -> None:
        self.section = section
        self.marks: dict[str, tuple[float, float]] = {}  # symbol -> (last price, strike or 0)

    def mark(self, tick: dict[str, Any]) -> None:
        self.marks[tick["symbol"]] = (tick.get("last_price") or 0.0, tick.get("strike") or 0.0)

    def first_mark(self, symbol: str, price: object, strike: float) -> None:
        """An approval's tick price, until the symbol's own ticks come (execution reads only what it trades)."""
        if symbol not in self.marks and isinstance(price, (int, float)) and not isinstance(price, bool) and price > 0:
            self.marks[symbol] = (float(price), strike)

    def needs(self, kind: str, units: int, price: float, strike: float) -> float:
        """Margin of ``units`` (signed: < 0 short) of an instrument of type ``kind`` at ``price``."""
        m = self.section
        if kind == "EQ":
            return abs(units) * price * m.equity_pct / 100
        if kind == "FUT":
            return abs(units) * price * m.futures_pct / 100
        if kind in ("CE", "PE") and units < 0:
            return -units * strike * m.option_short_pct / 100
        return abs(units) * price

    def refusal(self, order: Order, exposure: Exposure) -> str | None:
        """Why the order (one of the day's) may not be sent for want of margin, or None. It runs before every
        send: one pass over the symbols held, none over the day's orders."""
        own = exposure.others(order)
        units = _adds(order, own)
        if not units:
            return None
        last, strike = self.marks.get(order.symbol, (0.0, 0.0))
        price = order.limit_price or last
        if not price:  # no tick of it since the start (an order sent again at reconciliation): nothing to judge by
            return None
        need = self.needs(order.instrument_type, units if order.side == "BUY" else -units, price, strike)
        held = sum(self.needs(exposure.kinds[s], e, *self.marks.get(s, (0.0, 0.0)))
                   for s, e in exposure.units.items() if e and s != order.symbol)
        held += self.needs(order.instrument_type, own, price, strike)
        available = self.section.funds - held
        if need > available:
            return (f"margin: needs {need:,.0f} for {units} {order.symbol}, {max(available, 0.0):,.0f} available "
                    f"(paper model, funds {self.section.funds:,.0f})")
        return None


def kite_refusal(order: Order, units: int, required: float, available: float) -> str | None:
    """Kite's order margin against the account's available margin."""
    if required > available:
        return f"margin: Kite says {required:,.0f} is needed for {units} {order.symbol}, {available:,.0f} available"
    return None
