"""``Emulator``: Kite Connect's REST API and ticker on loopback, in background threads.

The real ``kiteconnect`` client is pointed at it (``root=emulator.root``, ticker
``root=emulator.ws_url``) and the test drives the market and the faults from its own thread.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from . import datafiles
from .book import AccountBook, OrderRule
from .faults import Faults
from .instruments import Instrument, Instruments
from .packets import Level, Tick, epoch
from .rest import RestHandler, wait_for_disconnect
from .servers import HOST, LoopbackServer
from .session import Sessions
from .ticker import TickerServer

TICK_FIELDS = {f.name for f in dataclasses.fields(Tick)} - {"instrument_token", "buy", "sell"}


class Emulator:
    """Kite on loopback. Ports 0 pick free ones; ``root`` and ``ws_url`` say where it listens. ``host``
    other than loopback only inside an isolated network namespace (a test's off-host Kite).

    >>> with Emulator() as kite_emu:                                   # doctest: +SKIP
    ...     kite_emu.add_instrument("NSE", "NEWCO", 9999873)            # one its own dump lacks
    ...     kite = KiteConnect(kite_emu.api_key, kite_emu.access_token, root=kite_emu.root)
    ...     kite_emu.set_price("NSE:INFY", 1500.0)
    ...     kite.place_order("regular", "NSE", "INFY", "BUY", 1, "CNC", "MARKET")
    """

    def __init__(self, *, port: int = 0, ws_port: int = 0, api_key: str = "emulator_api_key",
                 api_secret: str = "emulator_api_secret", access_token: str = "emulator_access_token",
                 instruments_csv: Path | None = None,
                 heartbeat_interval: float = 1.0, auto_market_protection_pct: float = 2.0, host: str = HOST) -> None:
        self.api_key, self.api_secret, self.access_token = api_key, api_secret, access_token
        self.instruments = (Instruments.from_csv(instruments_csv) if instruments_csv
                            else Instruments.from_text(datafiles.text("instruments.csv"), "the emulator's dump"))
        self.sessions = Sessions(api_key, api_secret, access_token)
        self.faults = Faults()
        self.book: AccountBook = AccountBook(self.instruments, datafiles.load("profile.json")["user_id"], self._order_update,
                         auto_market_protection_pct)
        self._ticks: dict[int, Tick] = {}
        self._lock = threading.Lock()  # ticks; taken before the book's lock, never after
        self._held = 0
        self._ticker = TickerServer(ws_port, self.faults, self.sessions.authorize, heartbeat_interval, host)
        try:
            self._rest = LoopbackServer(port, RestHandler, self, "kite-emulator-rest", host)
        except OSError:
            self._ticker.stop()  # frees the ticker's port
            raise

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def root(self) -> str:
        """For ``KiteConnect(root=...)``."""
        return f"http://{self._rest.host}:{self._rest.port}"

    @property
    def ws_url(self) -> str:
        """For ``KiteTicker(root=...)``."""
        return self._ticker.url

    def start(self) -> Emulator:
        self._ticker.start()
        self._rest.start()
        return self

    def close(self) -> None:
        """Close ticker clients (1001), cut REST connections, release held replies, free the ports."""
        self._ticker.stop()
        self._rest.stop()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- market ---------------------------------------------------------------------------------

    def add_instrument(self, exchange: str, tradingsymbol: str, token: int, **kwargs: Any) -> Instrument:
        """List and trade an instrument the dump lacks; kwargs: tick_size, lot_size, name, ..."""
        return self.instruments.add(exchange, tradingsymbol, token, **kwargs)

    def set_price(self, instrument: str, price: float) -> Tick:
        """The market moves: ``instrument`` (``EXCH:SYMBOL``) now trades at ``price``; subscribers get
        a tick and open orders on it a matching pass."""
        found = self.instruments.get(instrument)
        if found is None:
            raise ValueError(f"unknown instrument {instrument!r}: add_instrument() it or load a dump with it")
        return self.push_tick(found.token, last_price=price)

    def push_tick(self, token: int, *, depth: dict[str, list[dict[str, Any]]] | None = None,
                  **fields: Any) -> Tick:
        """Update ``token``'s state with ``fields`` (Tick's names; times as epoch or datetime; depth as
        the client decodes it) and send it to subscribers. Unset times default to now; open, high
        and low follow the last price unless given. Returns the state sent."""
        unknown = set(fields) - TICK_FIELDS
        if unknown:
            raise ValueError(f"unknown tick field(s) {', '.join(sorted(unknown))}; known: {sorted(TICK_FIELDS)}")
        with self._lock:
            tick = dataclasses.replace(self._ticks.get(token) or Tick(token))
            for name, value in fields.items():
                setattr(tick, name, epoch(value) if name in ("last_trade_time", "exchange_timestamp") else value)
            if depth is not None:
                tick.buy = tuple(Level(**lv) for lv in depth.get("buy", []))
                tick.sell = tuple(Level(**lv) for lv in depth.get("sell", []))
            now = int(time.time())
            tick.exchange_timestamp = tick.exchange_timestamp if "exchange_timestamp" in fields else now
            if "last_price" in fields:
                last = tick.last_price
                if "last_trade_time" not in fields:
                    tick.last_trade_time = now
                if "open" not in fields and not tick.open:
                    tick.open = last
                if "high" not in fields:
                    tick.high = max(tick.high, last)
                if "low" not in fields:
                    tick.low = min(tick.low, last) if tick.low else last
            self._ticks[token] = tick
            self._ticker.push_tick(tick)
            if "last_price" in fields:
                self.book.on_price(token, tick.last_price)
            return dataclasses.replace(tick)

    def push_packet(self, token: int, packet: bytes) -> None:
        """Send a raw binary packet as it is (one recorded from Kite, say) to subscribers of ``token``;
        the emulator's own state and order book do not change."""
        self._ticker.push_packet(token, packet)

    def tick(self, token: int) -> Tick | None:
        """The last state pushed for ``token`` (a copy)."""
        with self._lock:
            tick = self._ticks.get(token)
            return dataclasses.replace(tick) if tick else None

    # -- orders ---------------------------------------------------------------------------------

    def add_rule(self, *, instrument: str | None = None, tag: str | None = None, reject: str | None = None,
                 slices: tuple[int, ...] | list[int] = (), times: int | None = None) -> OrderRule:
        """Reject or fill in slices the orders that match; see ``OrderRule``."""
        return self.book.add_rule(OrderRule(instrument, tag, reject, tuple(slices), times))

    def clear_rules(self) -> None:
        self.book.clear_rules()

    # -- faults ---------------------------------------------------------------------------------

    def expire_tokens(self) -> None:
        """Every access token stops working (Kite's morning reset) until a new session is made."""
        self.sessions.expire_all()

    def configure_faults(self, spec: dict[str, Any]) -> None:
        """The admin route's JSON: ``Faults.configure`` keys plus ``"expire_tokens": true``."""
        spec = dict(spec)
        if spec.pop("expire_tokens", False):
            self.expire_tokens()
        self.faults.configure(spec)

    @property
    def held_replies(self) -> int:
        """place_order replies swallowed and still held open (their clients have not gone yet)."""
        with self._lock:
            return self._held

    def hold_reply(self, sock: socket.socket, stopping: threading.Event) -> None:
        """Never answer on ``sock``: wait until the client disconnects (or the emulator stops)."""
        with self._lock:
            self._held += 1
        try:
            wait_for_disconnect(sock, stopping)
        finally:
            with self._lock:
                self._held -= 1

    # -- ticker ---------------------------------------------------------------------------------

    def subscriptions(self) -> list[dict[int, str]]:
        """Token -> mode per open ticker connection: wait on this before pushing ticks."""
        return self._ticker.subscriptions()

    def _order_update(self, payload: dict[str, Any]) -> None:
        self._ticker.push_text({"type": "order", "data": payload})
