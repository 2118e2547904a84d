"""Today's derivatives for the paper market, in the shape of Kite's instruments dump.

A real dump lists the contracts alive today; a dump shipped with the code would expire. So the
paper universe ships spot instruments only, and this module lists each session's near-month
future and an options chain around the spot, the way the exchange would.
"""

from __future__ import annotations

import calendar
import zlib
from datetime import date, timedelta

from .instruments import Instrument
from .simulator import INDEX_OF

THURSDAY = 3
SHORT_NAME = {index: short for short, index in INDEX_OF.items()}


def monthly_expiry(day: date) -> date:
    """The last Thursday of the month, or of the next month once this month's has passed."""
    for year, month in ((day.year, day.month), (day.year + (day.month == 12), day.month % 12 + 1)):
        last = date(year, month, calendar.monthrange(year, month)[1])
        expiry = last - timedelta(days=(last.weekday() - THURSDAY) % 7)
        if expiry >= day:
            return expiry
    raise AssertionError("unreachable")


def weekly_expiry(day: date) -> date:
    return day + timedelta(days=(THURSDAY - day.weekday()) % 7)


def _token(symbol: str) -> int:
    """Stable, and far from Kite's real tokens (which stay below 2**27 in practice)."""
    return 0x40000000 | zlib.crc32(symbol.encode()) & 0x0FFFFFFF


def derivatives(spot: Instrument, day: date, *, lot_size: int, strikes: int, step: float) -> list[Instrument]:
    """The near-month future and a weekly chain of ``strikes`` strikes either side of the spot.

    Strikes at or below zero are not listed (a wide chain on a low-priced stock would reach them,
    and no exchange lists them: pricing one would fail)."""
    name = SHORT_NAME.get(spot.symbol, spot.symbol)
    fut_expiry = monthly_expiry(day)
    segment = "NFO"
    out = [
        Instrument(_token(sym := f"{name}{fut_expiry:%y%b}FUT".upper()), sym, name, 0.0, fut_expiry, 0.0, 0.05,
                   lot_size, "FUT", "NFO-FUT", segment)
    ]
    opt_expiry = weekly_expiry(day)
    atm = round(spot.last_price / step) * step
    for i in range(-strikes, strikes + 1):
        strike = atm + i * step
        if strike <= 0:
            continue
        for kind in ("CE", "PE"):
            sym = f"{name}{opt_expiry:%y%m%d}{strike:g}{kind}"
            out.append(Instrument(_token(sym), sym, name, 0.0, opt_expiry, strike, 0.05, lot_size, kind, "NFO-OPT", segment))
    return out
