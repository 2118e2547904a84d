"""The ticks a daemon asks the broker for when it needs only those of what it holds or trades (risk,
execution), not the universe's: a key filter on ``marketdata.tick`` that grows as symbols come up."""

from __future__ import annotations

from .client import BusClient
from .envelope import MARKETDATA_TICK


class TickWatch:
    """Subscribe the handler first; from then on the broker sends only the ticks of ``symbols``."""

    def __init__(self, bus: BusClient) -> None:
        self.bus = bus
        self.symbols: set[str] = set()
        bus.filter_keys(MARKETDATA_TICK, frozenset())

    def add(self, *symbols: object) -> None:
        """Ask for these symbols' ticks too (a name a filter cannot carry, or not text, is skipped)."""
        new = {s for s in symbols if isinstance(s, str) and s and "|" not in s} - self.symbols
        if new:
            self.symbols |= new
            self.bus.filter_keys(MARKETDATA_TICK, frozenset(self.symbols))
