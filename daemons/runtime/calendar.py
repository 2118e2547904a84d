"""The NSE trading calendar: the exchange's clock (IST) and which days have a session.

Every daemon that reads the market's time uses these (risk's trading hours, the feed's session, execution's
day, the journal's day files, the end-of-day report), so they live with what all daemons share, not in the
first daemon that needed them. The session's hours and the holidays are the fleet's config (``[market]``,
``MarketSection``): one place, read by every daemon alike.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import date, timedelta, timezone

IST = timezone(timedelta(hours=5, minutes=30), "IST")


def is_trading_day(day: date, holidays: Collection[date]) -> bool:
    """NSE has a session on weekdays that are not ``holidays`` (``market.holidays``)."""
    return day.weekday() < 5 and day not in holidays


def last_trading_day(day: date, holidays: Collection[date] = ()) -> date:
    """The paper market's default session: today, or the trading day before on a weekend or a
    holiday (risk blocks every entry on a day without a session, so simulating one trades nothing)."""
    while not is_trading_day(day, holidays):
        day -= timedelta(days=1)
    return day
