"""What placing an order needs to know of its instrument, carried with the order itself.

Every tick carries its instrument's facts (marketdata copies them from the instruments dump). An engine
copies the traded symbol's into its signal, risk's approval keeps them, and so algo-execution can place
the order without reading every tick of the universe: it asks only for the ticks of what it trades.
"""

from __future__ import annotations

from typing import Any, NamedTuple, TypeGuard

ORDER_FIELDS = ("instrument_type", "exchange", "lot_size", "tick_size", "strike")  # in a signal or an approval


class InstrumentFacts(NamedTuple):
    type: str  # EQ, FUT, CE, PE ("" when the feed did not say)
    exchange: str  # Kite's (NSE, NFO, ...): a live order needs it
    lot_size: int
    tick_size: float
    strike: float  # 0 for what is not an option

    @classmethod
    def of_tick(cls, p: dict[str, Any]) -> InstrumentFacts:
        """From a ``marketdata.tick`` payload (marketdata's own, so trusted; absent fields get Kite's defaults)."""
        return cls(p.get("type") or "", p.get("exchange") or "", p.get("lot_size") or 1, p.get("tick_size") or 0.05,
                   p.get("strike") or 0.0)

    @classmethod
    def of_order(cls, p: dict[str, Any]) -> InstrumentFacts | None:
        """From a signal or an approval: None when it carries none; ValueError, saying which, when malformed
        (an order is not sent on facts that cannot be right)."""
        if not any(name in p for name in ORDER_FIELDS):
            return None
        kind, exchange, lot, size, strike = (p.get(name) for name in ORDER_FIELDS)
        if not isinstance(kind, str) or not isinstance(exchange, str):
            raise ValueError(f"instrument_type {kind!r} and exchange {exchange!r} must be text")
        if type(lot) is not int or lot <= 0:
            raise ValueError(f"lot_size {lot!r} is not a positive whole number")
        if not _number(size) or size <= 0:
            raise ValueError(f"tick_size {size!r} is not a positive number")
        if not _number(strike) or strike < 0:
            raise ValueError(f"strike {strike!r} is not a number of zero or more")
        return cls(kind, exchange, lot, float(size), float(strike))

    def order_fields(self) -> dict[str, Any]:
        """As a signal carries them (``instrument_type``: an event's ``type`` is its topic)."""
        return dict(zip(ORDER_FIELDS, self, strict=True))


def _number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # not NaN
