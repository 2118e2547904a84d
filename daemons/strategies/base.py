"""The strategy API: pure objects that turn ticks and fills into signals.

A strategy never touches the bus, the clock or the disk, so it is tested by feeding it ticks.
The engine daemon that hosts it (one process per engine or per strategy) owns everything else:
subscriptions, risk, checkpoints. ``snapshot()``/``restore()`` round-trip through JSON.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal, NamedTuple

Side = Literal["BUY", "SELL"]


class Tick(NamedTuple):
    token: int
    symbol: str
    last_price: float
    bid: float
    ask: float
    volume: int
    oi: int
    exchange_ts: int  # ns since the epoch
    type: str  # EQ, FUT, CE, PE
    underlying: str
    strike: float
    expiry: str | None  # ISO date

    @classmethod
    def from_payload(cls, p: dict[str, Any]) -> Tick:
        return cls(p["token"], p["symbol"], p["last_price"], p["bid"], p["ask"], p["volume"], p["oi"], p["exchange_ts"],
                   p["type"], p["underlying"], p["strike"], p["expiry"])


class Fill(NamedTuple):
    symbol: str
    side: Side
    quantity: int
    price: float


class FeatureBar(NamedTuple):
    """One symbol's features at a bar's close (``features.bar``): ``values`` in FEATURES order
    (daemons/features/indicators.py), None while one is not warmed up."""

    token: int
    symbol: str
    end_ns: int  # the bar's close, exchange time
    values: list[float | None]


class Signal(NamedTuple):
    """An intent to trade; risk decides whether it becomes an order."""

    strategy: str
    symbol: str
    side: Side
    quantity: int
    order_type: Literal["MARKET", "LIMIT"]
    limit_price: float | None
    reason: str
    entry: bool  # False for exits: a kill switch blocks entries, never exits
    model: dict[str, str] | None = None  # a model strategy's model: path, version, feature hash (to the journal)


class Strategy(ABC):
    """Subclass, set ``kind``, and implement on_tick; keep all state in plain attributes."""

    kind: ClassVar[str]
    reads_bars: ClassVar[bool] = False  # True: the engine hands it features.bar of what it watches (on_bar)

    def __init__(self, name: str, **params: Any) -> None:
        self.name = name
        self.params = params
        self.position: dict[str, int] = {}  # symbol -> signed quantity, from fills

    def watches(self) -> frozenset[str] | None:
        """The symbols and underlyings whose ticks ``on_tick`` reads; None (the default) for every tick.

        The engine hands a strategy only the ticks it watches: with thousands of instruments on the
        bus, most ticks concern no strategy, and skipping them unread keeps a burst short."""
        return None

    def open(self) -> None:
        """Load what the config only names (a model file), before the first tick and again on a reload;
        raise with the reason if it cannot be used (the engine disables this strategy, and only it)."""

    @abstractmethod
    def on_tick(self, tick: Tick) -> list[Signal]:
        """React to one tick; return the signals it causes (usually none)."""

    def on_bar(self, bar: FeatureBar) -> list[Signal]:
        """React to one bar's features (only for ``reads_bars`` strategies)."""
        return []

    def on_history(self, bars: list[FeatureBar]) -> list[Signal]:
        """A watched symbol's recent bars, oldest first, from the feature cache (``features.snapshot``): once
        at start and after a reload that changed the strategy, so it need not wait for bars to accumulate
        (only for ``reads_bars`` strategies). The newest may also come, or have come, as an ``on_bar``."""
        return []

    def on_fill(self, fill: Fill) -> None:
        signed = fill.quantity if fill.side == "BUY" else -fill.quantity
        self.position[fill.symbol] = self.position.get(fill.symbol, 0) + signed

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to continue after a restart, as JSON-able data."""
        return {"position": dict(self.position), **self._state()}

    def restore(self, state: dict[str, Any]) -> None:
        self.position = {k: int(v) for k, v in state.get("position", {}).items()}
        self._load(state)

    def _state(self) -> dict[str, Any]:
        return {}

    def _load(self, state: dict[str, Any]) -> None:
        pass

    def signal(self, symbol: str, side: Side, quantity: int, reason: str, *, entry: bool,
               limit_price: float | None = None, model: dict[str, str] | None = None) -> Signal:
        return Signal(self.name, symbol, side, quantity, "LIMIT" if limit_price else "MARKET", limit_price, reason, entry,
                      model)

    def go_to(self, symbol: str, target: int, why: str, model: dict[str, str] | None = None) -> list[Signal]:
        """The signals that take the position in ``symbol`` to ``target`` (signed): an exit of what points
        the other way first, then the entry."""
        held = self.position.get(symbol, 0)
        out = []
        if held and (target == 0 or (held > 0) != (target > 0)):
            out.append(self.signal(symbol, "SELL" if held > 0 else "BUY", abs(held), f"exit: {why}", entry=False,
                                   model=model))
            held = 0
        if target != held:
            side: Side = "BUY" if target > held else "SELL"
            out.append(self.signal(symbol, side, abs(target - held), f"entry: {why}", entry=True, model=model))
        return out
