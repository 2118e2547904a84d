"""Estimated Zerodha charges per executed order: what separates the day's gross P&L from its net.

Rates as published by Zerodha, 2025 (https://zerodha.com/charges); update when they change.
Percentages are of the order's value (its fills' price x quantity; for options, the premium):

| segment | brokerage per executed order | STT | NSE transaction | stamp duty |
|---|---|---|---|---|
| equity intraday (MIS) | min(0.03%, Rs 20) | 0.025% sell | 0.00297% | 0.003% buy |
| equity delivery (CNC) | 0 | 0.1% buy and sell | 0.00297% | 0.015% buy |
| futures (FUT) | min(0.03%, Rs 20) | 0.02% sell | 0.00173% | 0.002% buy |
| options (CE, PE) | Rs 20 flat | 0.1% sell | 0.03503% | 0.003% buy |

Every segment also pays SEBI fees of Rs 10 per crore and 18% GST on brokerage + transaction + SEBI.
An executed order is one order id with one or more fills; brokerage is charged once per order,
everything else is proportional to value. Estimates only: the contract note is the authority.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields

SEBI_RATE = 10 / 10_000_000  # Rs 10 per crore
GST_RATE = 0.18  # on brokerage + transaction + SEBI


@dataclass(frozen=True)
class Rates:
    """One segment's rates, as fractions of the order's value (0.0003 = 0.03%)."""

    brokerage_pct: float | None  # of the value, capped at brokerage_max; None: brokerage_max flat
    brokerage_max: float  # rupees per executed order
    stt_buy: float
    stt_sell: float
    transaction: float
    stamp_buy: float


RATES: dict[str, Rates] = {
    "equity_intraday": Rates(0.0003, 20.0, stt_buy=0.0, stt_sell=0.00025, transaction=0.0000297, stamp_buy=0.00003),
    "equity_delivery": Rates(0.0, 0.0, stt_buy=0.001, stt_sell=0.001, transaction=0.0000297, stamp_buy=0.00015),
    "futures": Rates(0.0003, 20.0, stt_buy=0.0, stt_sell=0.0002, transaction=0.0000173, stamp_buy=0.00002),
    "options": Rates(None, 20.0, stt_buy=0.0, stt_sell=0.001, transaction=0.0003503, stamp_buy=0.00003),
}

PRODUCTS = ("MIS", "CNC")  # equity only: intraday or delivery; F&O rates do not depend on it


def segment(instrument_type: str, product: str) -> str:
    """The RATES key for a fill: Kite's instrument_type, and for equities the product traded."""
    if instrument_type == "FUT":
        return "futures"
    if instrument_type in ("CE", "PE"):
        return "options"
    if instrument_type == "EQ":
        if product not in PRODUCTS:
            raise ValueError(f"unknown product {product!r} (expected MIS or CNC)")
        return "equity_intraday" if product == "MIS" else "equity_delivery"
    raise ValueError(f"unknown instrument_type {instrument_type!r} (expected EQ, FUT, CE or PE)")


@dataclass(frozen=True)
class Charges:
    """Charges in rupees, unrounded so sums over many orders do not accumulate rounding."""

    brokerage: float = 0.0
    stt: float = 0.0
    transaction: float = 0.0
    sebi: float = 0.0
    stamp: float = 0.0
    gst: float = 0.0

    def __add__(self, other: Charges) -> Charges:
        return Charges(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def breakdown(self) -> dict[str, float]:
        """Each component rounded to paise; the total is the sum of the rounded parts, so the table adds up."""
        parts = {f.name: round(getattr(self, f.name), 2) for f in fields(self)}
        parts["total"] = round(sum(parts.values()), 2)
        return parts


def order_charges(segment: str, side: str, value: float) -> Charges:
    """Charges on one executed order of ``value`` rupees on ``side`` ("BUY" or "SELL")."""
    r = RATES[segment]
    buy = side == "BUY"
    brokerage = r.brokerage_max if r.brokerage_pct is None else min(value * r.brokerage_pct, r.brokerage_max)
    transaction = value * r.transaction
    sebi = value * SEBI_RATE
    return Charges(
        brokerage=brokerage,
        stt=value * (r.stt_buy if buy else r.stt_sell),
        transaction=transaction,
        sebi=sebi,
        stamp=value * r.stamp_buy if buy else 0.0,
        gst=GST_RATE * (brokerage + transaction + sebi),
    )
