"""Per-symbol indicators, updated once per closed bar (incremental: O(1) per bar but the volatility
window). Values are NaN until an indicator has seen enough bars (``null`` in JSON).

The names and their order are a contract: ``features.bar`` carries the values as an array in this
order (docs/ARCHITECTURE.md, "Candles and features").

- ``return``: log return of the close over the previous bar's close;
- ``ema_fast`` / ``ema_slow``: exponential moving averages of the close, alpha = 2 / (n + 1), seeded
  with the first close;
- ``rsi``: Wilder's RSI over ``rsi_period`` closes (a simple average of the first period's gains and
  losses, then Wilder's smoothing); 100 when there were no losses;
- ``atr``: Wilder's average true range over ``atr_period`` bars (a first bar's true range is its range);
- ``volatility``: sample standard deviation of the last ``volatility_window`` returns (per bar, not
  annualised);
- ``oi_change``: open interest at the bar's close less at the previous bar's close.
"""

from __future__ import annotations

import math
from array import array
from typing import NamedTuple

from .candles import Bar

FEATURES = ("return", "ema_fast", "ema_slow", "rsi", "atr", "volatility", "oi_change")
NAN = math.nan


class Periods(NamedTuple):
    ema_fast: int = 12
    ema_slow: int = 26
    rsi: int = 14
    atr: int = 14
    volatility: int = 20


class Indicators:
    """One symbol's indicator state."""

    __slots__ = ("_bars", "_gain", "_loss", "_oi", "_oldest", "_returns", "_tr", "atr", "close", "ema_fast", "ema_slow",
                 "periods", "rsi")

    def __init__(self, periods: Periods) -> None:
        self.periods = periods
        self.close = NAN  # the previous bar's close
        self._oi = 0
        self._bars = 0
        self.ema_fast = self.ema_slow = self.rsi = self.atr = NAN
        self._gain = self._loss = self._tr = 0.0  # sums over the first period, then Wilder's averages
        # The last ``volatility`` returns as raw doubles, a ring once full (``_oldest``): one per symbol of
        # the universe, and a deque of float objects is ~8x the memory (bench/features/README.md, "Memory").
        self._returns = array("d")
        self._oldest = 0

    def update(self, bar: Bar) -> tuple[float, ...]:
        """The features at this bar's close, in ``FEATURES`` order."""
        p, close, previous = self.periods, bar.close, self.close
        if self._bars == 0:
            ret = oi_change = NAN
            self.ema_fast = self.ema_slow = close
            true_range = bar.high - bar.low
        else:
            ret = math.log(close / previous)
            oi_change = float(bar.oi - self._oi)
            self.ema_fast += 2.0 / (p.ema_fast + 1) * (close - self.ema_fast)
            self.ema_slow += 2.0 / (p.ema_slow + 1) * (close - self.ema_slow)
            true_range = max(bar.high - bar.low, abs(bar.high - previous), abs(bar.low - previous))
            self._remember(ret)
            change = close - previous
            self._gain, self._loss = (_wilder(self._gain, max(change, 0.0), self._bars, p.rsi),
                                      _wilder(self._loss, max(-change, 0.0), self._bars, p.rsi))
            if self._bars >= p.rsi:
                self.rsi = 100.0 if self._loss == 0 else 100.0 - 100.0 / (1.0 + self._gain / self._loss)
        self._bars += 1
        self._tr = _wilder(self._tr, true_range, self._bars, p.atr)
        if self._bars >= p.atr:
            self.atr = self._tr
        self.close, self._oi = close, bar.oi
        return ret, self.ema_fast, self.ema_slow, self.rsi, self.atr, self._volatility(), oi_change

    def _remember(self, ret: float) -> None:
        r = self._returns
        if len(r) < self.periods.volatility:
            r.append(ret)
        else:
            r[self._oldest] = ret
            self._oldest = (self._oldest + 1) % len(r)

    def _volatility(self) -> float:
        n = len(self._returns)
        if n < max(2, self.periods.volatility):
            return NAN
        r = self._returns[self._oldest:] + self._returns[:self._oldest]  # oldest first: the sums' order is the contract
        mean = sum(r) / n
        return math.sqrt(sum((x - mean) ** 2 for x in r) / (n - 1))


def _wilder(average: float, value: float, count: int, n: int) -> float:
    """Wilder's smoothing of the ``count``-th value (1-based): the running mean over the first ``n``
    values, then ``(average * (n - 1) + value) / n``."""
    if count <= n:
        return average + (value - average) / count
    return (average * (n - 1) + value) / n
