"""Streaming indicators: one value in, the current reading out, O(1) per update.

Their state is their plain attributes: ``vars(indicator)`` is a snapshot, ``vars(indicator).update()``
restores one.
"""

from __future__ import annotations


class EMA:
    """Exponential moving average seeded with the simple average of its first ``period`` values."""

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError("period must be at least 1")
        self.period = period
        self.alpha = 2.0 / (period + 1)
        self.value: float | None = None
        self.count = 0
        self._sum = 0.0

    @property
    def ready(self) -> bool:
        return self.count >= self.period

    def update(self, x: float) -> float | None:
        self.count += 1
        if self.count < self.period:
            self._sum += x
            return None
        if self.count == self.period:
            self.value = (self._sum + x) / self.period
        else:
            assert self.value is not None
            self.value += self.alpha * (x - self.value)
        return self.value


class RSI:
    """Wilder's relative strength index over ``period`` changes."""

    def __init__(self, period: int = 14) -> None:
        if period < 2:
            raise ValueError("period must be at least 2")
        self.period = period
        self.prev: float | None = None
        self.gain = 0.0
        self.loss = 0.0
        self.count = 0
        self.value: float | None = None

    def update(self, x: float) -> float | None:
        if self.prev is None:
            self.prev = x
            return None
        change, self.prev = x - self.prev, x
        up, down = max(change, 0.0), max(-change, 0.0)
        self.count += 1
        if self.count <= self.period:  # the first average is a simple one
            self.gain += up / self.period
            self.loss += down / self.period
            if self.count < self.period:
                return None
        else:
            self.gain = (self.gain * (self.period - 1) + up) / self.period
            self.loss = (self.loss * (self.period - 1) + down) / self.period
        self.value = 100.0 if self.loss == 0 else 100.0 - 100.0 / (1.0 + self.gain / self.loss)
        return self.value
