"""The feature cache: recent bars and features in a ring buffer per symbol, so a strategy that starts
late or restarts gets recent history at once (``features.snapshot``, codec.py) instead of waiting for
bars to accumulate.

Only for the symbols someone may ask for: a ring is ~13 KB (120 bars x 14 float64 columns), so every
symbol of a 9,000-instrument universe would be ~120 MB while the strategies that read bars trade a few
dozen (bench/features/README.md, "Memory"). ``symbols`` are those; a symbol first asked for later
(``want``) is kept from then on.

A ring is a flat ``array("d")``, not a numpy array: algo-marketdata, which writes the rings, then never
imports numpy (~10 MB of RSS); the readers of a snapshot decode it with numpy (codec.py).
"""

from __future__ import annotations

from array import array

from .candles import NS, Bar
from .indicators import FEATURES

COLUMNS = ("start_sec", "open", "high", "low", "close", "volume", "oi", *FEATURES)
WIDTH = len(COLUMNS)


class Ring:
    """The last ``capacity`` rows of one symbol, ``WIDTH`` float64 values each, oldest first when read."""

    __slots__ = ("capacity", "count", "rows", "symbol", "token")

    def __init__(self, token: int, symbol: str, capacity: int) -> None:
        self.token, self.symbol, self.capacity = token, symbol, capacity
        self.rows = array("d", bytes(8 * WIDTH * capacity))
        self.count = 0  # rows ever written

    def append(self, bar: Bar, features: tuple[float, ...]) -> None:
        at = self.count % self.capacity * WIDTH
        # start in whole seconds: exact in a float64 (nanoseconds since 1970 are not)
        self.rows[at:at + WIDTH] = array("d", (bar.start_ns // NS, bar.open, bar.high, bar.low, bar.close,
                                               bar.volume, bar.oi, *features))
        self.count += 1

    def history(self) -> array[float]:
        """The rows kept, oldest first, one after another (``WIDTH`` values a row)."""
        if self.count <= self.capacity:
            return self.rows[:self.count * WIDTH]
        at = self.count % self.capacity * WIDTH
        return self.rows[at:] + self.rows[:at]


class FeatureCache:
    """Rings by frame key, in the order instruments first closed a bar; ``symbols``: whose bars are kept
    (None: every symbol's)."""

    def __init__(self, capacity: int, symbols: frozenset[str] | None = None) -> None:
        self.capacity = capacity
        self.symbols = symbols
        self.rings: dict[str, Ring] = {}

    def want(self, symbols: frozenset[str] | None) -> None:
        """Keep these symbols' bars too, from now on (None: every symbol's)."""
        if self.symbols is not None:
            self.symbols = None if symbols is None else self.symbols | symbols

    def keeps(self, symbol: str) -> bool:
        """Whether this symbol's bars are kept (a strategy reads them, or asked for them)."""
        return self.symbols is None or symbol in self.symbols

    def append(self, bar: Bar, features: tuple[float, ...]) -> None:
        ring = self.rings.get(bar.key)
        if ring is None:
            if not self.keeps(bar.symbol):
                return
            ring = self.rings[bar.key] = Ring(bar.token, bar.symbol, self.capacity)
        ring.append(bar, features)

    def select(self, symbols: list[str] | None) -> list[tuple[str, Ring]]:
        """(key, ring) of these symbols (every ring for None), in cache order."""
        wanted = None if symbols is None else set(symbols)
        return [(key, ring) for key, ring in self.rings.items() if wanted is None or ring.symbol in wanted]
