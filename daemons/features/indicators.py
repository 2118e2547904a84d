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


# Where an Indicators keeps its floats: these, then the last ``volatility`` returns (a ring once full).
CLOSE, EMA_FAST, EMA_SLOW, RSI, ATR, GAIN, LOSS, TR, RETURNS = range(9)


class Indicators:
    """One symbol's indicator state: one per symbol of the universe, so its floats are raw doubles in one
    array and not float objects (~470 bytes a symbol once warm, was ~660; bench/pipeline/README.md, round 11)."""

    __slots__ = ("_bars", "_oi", "_oldest", "_values", "periods")

    def __init__(self, periods: Periods) -> None:
        self.periods = periods
        self._oi = 0
        self._bars = 0
        self._oldest = 0
        # close: the previous bar's; gain, loss, tr: sums over the first period, then Wilder's averages
        self._values = array("d", (NAN, NAN, NAN, NAN, NAN, 0.0, 0.0, 0.0)) + array("d", bytes(8 * periods.volatility))

    def update(self, bar: Bar) -> tuple[float, ...]:
        """The features at this bar's close, in ``FEATURES`` order."""
        p, v, close = self.periods, self._values, bar.close
        previous = v[CLOSE]
        if self._bars == 0:
            ret = oi_change = NAN
            ema_fast = ema_slow = close
            true_range = bar.high - bar.low
        else:
            ret = math.log(close / previous)
            oi_change = float(bar.oi - self._oi)
            ema_fast = v[EMA_FAST]
            ema_fast += 2.0 / (p.ema_fast + 1) * (close - ema_fast)
            ema_slow = v[EMA_SLOW]
            ema_slow += 2.0 / (p.ema_slow + 1) * (close - ema_slow)
            true_range = max(bar.high - bar.low, abs(bar.high - previous), abs(bar.low - previous))
            self._remember(ret)
            change = close - previous
            gain = v[GAIN] = _wilder(v[GAIN], max(change, 0.0), self._bars, p.rsi)
            loss = v[LOSS] = _wilder(v[LOSS], max(-change, 0.0), self._bars, p.rsi)
            if self._bars >= p.rsi:
                v[RSI] = 100.0 if loss == 0 else 100.0 - 100.0 / (1.0 + gain / loss)
        v[EMA_FAST], v[EMA_SLOW] = ema_fast, ema_slow
        self._bars += 1
        tr = v[TR] = _wilder(v[TR], true_range, self._bars, p.atr)
        if self._bars >= p.atr:
            v[ATR] = tr
        v[CLOSE], self._oi = close, bar.oi
        return ret, ema_fast, ema_slow, v[RSI], v[ATR], self._volatility(), oi_change

    def _remember(self, ret: float) -> None:
        """Called with the return of the ``_bars``-th bar (1-based, 1 on the second): ``_bars - 1`` are held."""
        held, window = self._bars - 1, self.periods.volatility
        if held < window:
            self._values[RETURNS + held] = ret
        else:
            self._values[RETURNS + self._oldest] = ret
            self._oldest = (self._oldest + 1) % window

    def _volatility(self) -> float:
        n = min(self._bars - 1, self.periods.volatility)
        if n < max(2, self.periods.volatility):
            return NAN
        v, at = self._values, RETURNS + self._oldest
        r = v[at:] + v[RETURNS:at]  # oldest first: the sums' order is the contract
        mean = sum(r) / n
        return math.sqrt(sum((x - mean) ** 2 for x in r) / (n - 1))


def _wilder(average: float, value: float, count: int, n: int) -> float:
    """Wilder's smoothing of the ``count``-th value (1-based): the running mean over the first ``n``
    values, then ``(average * (n - 1) + value) / n``."""
    if count <= n:
        return average + (value - average) / count
    return (average * (n - 1) + value) / n
