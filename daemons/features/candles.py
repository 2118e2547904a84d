"""OHLCV bars from ticks, keyed on exchange time (never the wall clock), so a replay gives the same bars.

Bars are aligned to the interval from midnight IST (1-minute bars start on the minute, 15-minute bars
at 09:15, 09:30, ...). One clock closes them all: the feed's exchange time is the newest tick's bucket,
and a tick of a later bucket closes every bar still open, in the order their symbols first ticked. A
tick of a bucket already closed (an exchange timestamp going backwards) is late: counted, not used. A
bucket in which a symbol did not tick has no bar for it.

Volume is the bar's traded quantity, the difference of Kite's cumulative day volume at the bar's last
tick and at the tick before the bar (for a symbol's first bar: its first tick's cumulative volume
less that tick's ``last_qty``); a cumulative volume that falls (a new day, a corrected feed) starts
counting afresh from that tick. A late tick's trades therefore count in the bar of its symbol's next
tick. ``oi`` is the open interest at the bar's last tick. A tick whose fields have the wrong types
(a damaged recording), or without a positive last price (Kite sends 0 for a contract not traded yet),
is malformed for bars: counted, not used, and it changes nothing. So every bar's prices are positive,
which the indicators rely on (log returns).
"""

from __future__ import annotations

from typing import Any

NS = 1_000_000_000
IST_OFFSET_NS = (5 * 3600 + 30 * 60) * NS


class Bar:
    """One instrument's bar; mutable while open. ``key`` is its ticks' frame key (``envelope.tick_key``),
    which tells instruments apart even where a tick CSV gives no token."""

    __slots__ = ("close", "high", "key", "low", "oi", "open", "start_ns", "symbol", "ticks", "token", "volume")

    def __init__(self, key: str, token: int, symbol: str, start_ns: int, price: float, oi: int) -> None:
        self.key, self.token, self.symbol, self.start_ns = key, token, symbol, start_ns
        self.open = self.high = self.low = self.close = price
        self.volume = 0
        self.oi = oi
        self.ticks = 0

    def payload(self, interval_ns: int) -> dict[str, Any]:
        """The ``marketdata.ohlc`` payload."""
        return {"token": self.token, "symbol": self.symbol, "start": self.start_ns, "end": self.start_ns + interval_ns,
                "open": self.open, "high": self.high, "low": self.low, "close": self.close, "volume": self.volume,
                "oi": self.oi, "ticks": self.ticks}


class CandleBuilder:
    """Feed it every tick the feed publishes, with its frame key (``on_tick``); it returns the bars a tick closed."""

    __slots__ = ("_bars", "_cumulative", "bucket", "interval_ns", "late", "malformed")

    def __init__(self, interval_sec: int) -> None:
        self.interval_ns = interval_sec * NS
        self.bucket = 0  # start of the newest bucket any tick fell in (exchange time)
        self._bars: dict[str, Bar] = {}  # open bars, all of ``bucket``, by key
        self._cumulative: dict[str, int] = {}  # key -> cumulative volume at its last tick
        self.late = 0
        self.malformed = 0

    def on_tick(self, tick: dict[str, Any], key: str) -> list[Bar]:
        ts, price, symbol = tick.get("exchange_ts"), tick.get("last_price"), tick.get("symbol")
        volume, last_qty, oi = tick.get("volume", 0), tick.get("last_qty", 0), tick.get("oi", 0)
        if not (type(ts) is int and (type(price) is float or type(price) is int) and type(symbol) is str
                and type(volume) is int and type(last_qty) is int and type(oi) is int  # type(): True is no int here
                and price > 0):
            self.malformed += 1
            return []
        start = ts - (ts + IST_OFFSET_NS) % self.interval_ns
        closed: list[Bar] = []
        if start != self.bucket:
            if start < self.bucket:
                self.late += 1
                return closed
            closed = list(self._bars.values())
            self._bars.clear()
            self.bucket = start
        before = self._cumulative.get(key)
        if before is None or volume < before:
            before = volume - last_qty
        self._cumulative[key] = volume
        bar = self._bars.get(key)
        if bar is None:
            bar = self._bars[key] = Bar(key, tick.get("token", 0), symbol, self.bucket, price, 0)  # one start for them all
        elif price > bar.high:
            bar.high = price
        elif price < bar.low:
            bar.low = price
        bar.close = price
        bar.volume += volume - before
        bar.oi = oi
        bar.ticks += 1
        return closed

    def flush(self) -> list[Bar]:
        """Close every open bar (the session is over)."""
        closed = list(self._bars.values())
        self._bars.clear()
        return closed
