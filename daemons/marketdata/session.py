"""The simulated session (the fleet's ``[market]`` hours, IST) on a clock that can run faster than real time."""

from __future__ import annotations

from datetime import date, datetime

from ..runtime.calendar import IST
from ..runtime.config import NSE_HOURS, MarketSection


class SessionClock:
    """Maps step n of ``steps`` to a moment of the session: every step advances it equally,
    so a run is the same whatever the wall clock did (deterministic replays)."""

    def __init__(self, day: date, steps: int, market: MarketSection = NSE_HOURS) -> None:
        if steps < 1:
            raise ValueError("a session needs at least one step")
        self.day = day
        self.steps = steps
        self.seconds = market.seconds  # the session's length
        self.open_ns = int(datetime.combine(day, market.open, IST).timestamp()) * 1_000_000_000
        self.step_ns = self.seconds * 1_000_000_000 // steps

    def at(self, step: int) -> int:
        """Exchange time (ns since the epoch) of a step; the last step is the close."""
        return self.open_ns + min(step, self.steps) * self.step_ns

    def label(self, step: int) -> str:
        return datetime.fromtimestamp(self.at(step) / 1e9, IST).strftime("%H:%M:%S IST")
