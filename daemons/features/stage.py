"""Ticks in, closed bars and their features out: the candle builder, each symbol's indicators and the
cache, as the feed runs them (algo-marketdata). Closing is split from the tick so that the feed can
publish a minute's thousands of closed bars in slices, between its ticks: first those of the symbols a
strategy reads (the ones the cache keeps), then the rest of the universe's."""

from __future__ import annotations

from collections import deque
from typing import Any

from .cache import FeatureCache
from .candles import Bar, CandleBuilder
from .codec import bar_features
from .indicators import Indicators, Periods


class FeatureStage:
    def __init__(self, bar_seconds: int, history: int, periods: Periods, cached: frozenset[str] | None = None) -> None:
        """``history`` bars kept in the cache for each of the ``cached`` symbols (None: every symbol)."""
        self.candles = CandleBuilder(bar_seconds)
        self.periods = periods
        self.cache = FeatureCache(history, cached)
        self.indicators: dict[str, Indicators] = {}  # by frame key
        self.first: deque[Bar] = deque()  # closed, not yet published, of symbols a strategy reads: they go first
        self.rest: deque[Bar] = deque()  # closed, not yet published: the rest of the universe's
        self.closed = 0

    @property
    def pending(self) -> int:
        """Closed bars not yet published."""
        return len(self.first) + len(self.rest)

    def on_tick(self, tick: dict[str, Any], key: str) -> bool:
        """Count the tick (``key``: its frame key) in its bar; True when it closed bars (``pending``)."""
        closed = self.candles.on_tick(tick, key)
        self._queue(closed)
        return bool(closed)

    def flush(self) -> None:
        """The session is over: close the open bars too."""
        self._queue(self.candles.flush())

    def _queue(self, closed: list[Bar]) -> None:
        keeps = self.cache.keeps
        for bar in closed:
            (self.first if keeps(bar.symbol) else self.rest).append(bar)

    def close_next(self) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """The next pending bar's frame key, ``marketdata.ohlc`` and ``features.bar`` payloads (it joins the
        cache): the oldest of those a strategy reads, then the oldest of the rest. A symbol's bars stay in order."""
        bar = (self.first or self.rest).popleft()
        state = self.indicators.get(bar.key)
        if state is None:
            state = self.indicators[bar.key] = Indicators(self.periods)
        features = state.update(bar)
        self.cache.append(bar, features)
        self.closed += 1
        interval = self.candles.interval_ns
        return bar.key, bar.payload(interval), bar_features(bar, interval, features)
