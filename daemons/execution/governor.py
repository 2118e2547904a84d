"""The fleet's order-rate governor: Kite allows 10 orders a second, 400 a minute and 5,000 a day
per API key. Orders over the per-second or per-minute budget wait for room (in order); over the
day's budget they are refused. Every order of the fleet goes through algo-execution, so one
governor here covers the fleet. When Kite answers 429 anyway (other tools on the same API key),
``hold`` makes every order wait out the backoff, so the governor slows down with Kite.
"""

from __future__ import annotations

from collections import deque

WINDOWS = (("second", 1.0), ("minute", 60.0))


class Governor:
    def __init__(self, per_second: float, per_minute: int, per_day: int) -> None:
        self.limits = {"second": per_second, "minute": per_minute, "day": per_day}
        self.sent: deque[float] = deque()  # monotonic send times within the last minute
        self.today = 0
        self.held_until = 0.0  # monotonic: no order leaves before this

    def _expire(self, now: float) -> None:
        while self.sent and now - self.sent[0] >= 60.0:
            self.sent.popleft()

    def in_window(self, window: str, now: float) -> int:
        if window == "day":
            return self.today
        self._expire(now)
        span = dict(WINDOWS)[window]
        return sum(1 for t in self.sent if now - t < span)

    def remaining(self, window: str, now: float) -> float:
        return max(0.0, self.limits[window] - self.in_window(window, now))

    def day_exhausted(self) -> bool:
        return self.today >= self.limits["day"]

    def wait(self, now: float) -> float:
        """Seconds until one more order fits the per-second and per-minute budgets (0: now)."""
        self._expire(now)
        delay = max(0.0, self.held_until - now)
        for window, span in WINDOWS:
            inside = [t for t in self.sent if now - t < span]
            excess = len(inside) - int(self.limits[window]) + 1
            if excess > 0:  # the oldest `excess` sends must leave the window first
                delay = max(delay, inside[excess - 1] + span - now)
        return delay

    def hold(self, until: float) -> None:
        """No order leaves before ``until`` (monotonic): Kite said 429."""
        self.held_until = max(self.held_until, until)

    def take(self, now: float) -> None:
        self.sent.append(now)
        self.today += 1

    def new_day(self) -> None:
        self.today = 0
