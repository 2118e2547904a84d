"""The NSE session (09:15-15:30 IST) on a clock that can run faster than real time."""

from __future__ import annotations

from collections.abc import Collection
from datetime import date, datetime, time, timedelta, timezone

IST = timezone(timedelta(hours=5, minutes=30), "IST")
OPEN = time(9, 15)
CLOSE = time(15, 30)
SESSION_SECONDS = 6 * 3600 + 15 * 60


class SessionClock:
    """Maps step n of ``steps`` to a moment of the session: every step advances it equally,
    so a run is the same whatever the wall clock did (deterministic replays)."""

    def __init__(self, day: date, steps: int) -> None:
        if steps < 1:
            raise ValueError("a session needs at least one step")
        self.day = day
        self.steps = steps
        self.open_ns = int(datetime.combine(day, OPEN, IST).timestamp()) * 1_000_000_000
        self.step_ns = SESSION_SECONDS * 1_000_000_000 // steps

    def at(self, step: int) -> int:
        """Exchange time (ns since the epoch) of a step; the last step is the close."""
        return self.open_ns + min(step, self.steps) * self.step_ns

    def label(self, step: int) -> str:
        return datetime.fromtimestamp(self.at(step) / 1e9, IST).strftime("%H:%M:%S IST")


def is_trading_day(day: date, holidays: Collection[date]) -> bool:
    """NSE has a session on weekdays that are not ``holidays`` (``daemons.risk.holidays``)."""
    return day.weekday() < 5 and day not in holidays


def last_trading_day(day: date, holidays: Collection[date] = ()) -> date:
    """The paper market's default session: today, or the trading day before on a weekend or a
    holiday (risk blocks every entry on a day without a session, so simulating one trades nothing)."""
    while not is_trading_day(day, holidays):
        day -= timedelta(days=1)
    return day
