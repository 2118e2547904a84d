"""The live feed: Kite's ticker WebSockets bridged into the daemon's asyncio loop.

``KiteTicker`` runs on Twisted's reactor, shared by the process and never stopped
(``runtime/kite_ticker.py``): ``stop()`` closes the connections only.

Threads: callbacks run on the reactor thread, which decodes each binary message with
``ticks.decode`` (``_parse_binary`` is 10-20x slower: bench/ticker/README.md; the client's
``on_ticks`` is left unset so it never runs) and hands the message's list of payloads to the loop
with one ``call_soon_threadsafe``: ``publish`` gets the message's ticks together (only ever on the loop).
Connection state is written on the reactor thread and only read elsewhere (``health()``,
``status()``).

Reconnecting: the client's own ``ReconnectingClientFactory`` redials with backoff and never gives
up (``dial_forever``), so ``on_noreconnect`` never fires. The
delay is capped at ``Backoff.max_sec`` from the pre-open (09:00) to the close, and at
``max_closed_sec`` otherwise; tightening it 15 minutes early means a connection down overnight is
already retrying often when the market opens. The client resubscribes (in the same mode) by itself
after a reconnect.

Silence: Kite sends a heartbeat every second but no tick when nothing trades, and a half-open TCP
connection delivers nothing at all (the client sends no pings). In market hours (09:15-15:30 IST on
weekdays that are not ``holidays``) a connection without a tick for ``stale_after_sec`` is dropped
and redialled, and ``health()`` names every connection whose last tick is older than that.
Outside market hours silence is normal and healthy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from kiteconnect import KiteTicker
from twisted.internet import reactor, task

from ..runtime.calendar import IST, is_trading_day
from ..runtime.config import NSE_HOURS, KiteSection, MarketdataSection, MarketSection
from ..runtime.kite_ticker import CONNECT_TIMEOUT_SEC, dial_forever, ensure_reactor
from .instruments import Instrument
from .ticks import NS, Meta, decode
from .universe import split

log = logging.getLogger("algo.marketdata.kite")

PRE_OPEN = timedelta(minutes=15)  # before the open: reconnects hurry from here on
MALFORMED_LOG_SEC = 60.0

class Clock(Protocol):
    """``time`` (the module) by default; tests inject market hours."""

    def time(self) -> float: ...

    def monotonic(self) -> float: ...


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: ``initial_sec``, times ``factor`` per failed attempt (Twisted adds ~12 %
    jitter), capped at ``max_sec`` from the pre-open to the close, when every second down loses
    ticks, and at ``max_closed_sec`` otherwise, when retrying less often keeps the journal readable."""

    initial_sec: float = 1.0
    factor: float = 2.0
    max_sec: float = 5.0
    max_closed_sec: float = 60.0


def session_opened(wall: float, mono: float, market: MarketSection, early: timedelta = timedelta(0)) -> float | None:
    """The monotonic time at which today's session opened (``early`` before ``market.open``), or None outside
    that-to-close (``market``'s hours, IST) or on a day without a session."""
    now = datetime.fromtimestamp(wall, IST)
    opens = datetime.combine(now.date(), market.open, IST) - early
    if not is_trading_day(now.date(), market.holidays) or not opens <= now < datetime.combine(now.date(), market.close, IST):
        return None
    return mono - (now - opens).total_seconds()


class _Connection:
    """One ticker WebSocket and what the feed knows about it (written on the reactor thread)."""

    def __init__(self, feed: KiteFeed, number: int, instruments: Sequence[Instrument], kws: KiteTicker) -> None:
        self.feed = feed
        self.number = number
        self.tokens = [i.token for i in instruments]
        self.kws = kws
        self.up = False
        self.opens = 0
        self.since = 0.0  # monotonic time of the last change between up and down
        self.last_tick = 0.0  # monotonic; 0 = none yet
        self.error = ""  # why it last went down or failed to come up
        kws.on_connect = self._on_connect
        kws.on_close = self._on_close
        kws.on_error = self._on_error
        kws.on_message = self._on_message

    def _on_connect(self, ws: KiteTicker, response: Any) -> None:
        self.up, self.since = True, self.feed.clock.monotonic()
        self.opens += 1
        if self.opens > 1:
            self.feed.reconnects += 1
            log.info("kite connection %d is back (reconnect %d of the feed)", self.number, self.feed.reconnects)
        self.error = ""
        if not ws.subscribed_tokens:  # the first connect; after a reconnect the client resubscribes by itself
            ws.subscribe(self.tokens)
            ws.set_mode(self.feed.mode, self.tokens)

    def _on_close(self, ws: KiteTicker, code: int | None, reason: str | None) -> None:
        if self.up:
            self.up, self.since = False, self.feed.clock.monotonic()
            self.error = self.error or f"closed {code}: {reason}"
            if not self.feed.stopped:
                log.warning("kite connection %d down: %s; redialling", self.number, self.error)

    def _on_error(self, ws: KiteTicker, code: int | None, reason: Any) -> None:
        self.error = f"{code}: {reason}"

    def _on_message(self, ws: KiteTicker, payload: bytes, is_binary: bool) -> None:
        if is_binary and len(payload) > 4:  # <= 4 bytes: a heartbeat
            self.feed._on_ticks(self, payload)

    def drop(self, now: float, why: str) -> None:
        """Abort the TCP connection (no close handshake: the peer may be gone); the factory redials."""
        self.up, self.since, self.error = False, now, why
        self.kws.ws.dropConnection(abort=True)


class KiteFeed:
    """Ticks of ``instruments`` from Kite's ticker, handed to ``publish`` on ``loop`` a message's list at a time.

    ``section`` gives ``ticker_mode`` and ``stale_after_sec``; ``kite`` the credentials,
    ``ticker_root`` and the connection limits the instruments are split by (UniverseError when they
    do not fit; ValueError without an access token); ``connections`` caps the connections below
    ``kite.max_connections`` (algo-execution holds one of the API key's for order updates).
    ``clock`` tells market hours (``time()``) and
    measures silence (``monotonic()``); ``market`` has the session's hours and holidays (outside them
    silence is healthy). ``reconnects`` counts connections re-established after a loss,
    ``forced_reconnects`` the drops the feed made itself after silence in market hours, ``malformed``
    the packets skipped as malformed (``ticks.decode``).
    """

    def __init__(self, section: MarketdataSection, kite: KiteSection, instruments: Sequence[Instrument],
                 publish: Callable[[list[dict[str, Any]]], None], loop: asyncio.AbstractEventLoop,
                 clock: Clock = time, *, market: MarketSection = NSE_HOURS, backoff: Backoff = Backoff(),
                 connections: int | None = None) -> None:
        if kite.api_key is None or kite.access_token is None:
            raise ValueError("the live feed needs kite.api_key and kite.access_token (run `algoctl login`)")
        groups = split(instruments, connections or kite.max_connections, kite.instruments_per_connection)
        self.mode = section.ticker_mode
        self.stale_after = section.stale_after_sec
        self.publish = publish
        self.loop = loop
        self.clock = clock
        self.market = market
        self.backoff = backoff
        self.instruments = len(instruments)
        self.stopped = False
        self.reconnects = 0
        self.forced_reconnects = 0
        self.ticks = 0  # decoded, all connections
        self.malformed = 0  # packets the client would reject, all connections
        self._malformed_logged = -MALFORMED_LOG_SEC  # monotonic
        self.last_tick = 0.0  # monotonic; 0 = none yet
        self._meta = {i.token: Meta.of(i) for i in instruments}
        api_key, token = kite.api_key.get_secret_value(), kite.access_token.get_secret_value()
        self._connections = [
            _Connection(self, n, group, KiteTicker(api_key, token, root=kite.ticker_root,
                                                   connect_timeout=CONNECT_TIMEOUT_SEC))
            for n, group in enumerate(groups, start=1)
        ]
        self._started = 0.0  # monotonic; 0 = not started
        self._checker = task.LoopingCall(self._check)
        self._rate_at, self._rate_ticks = 0.0, 0

    # -- lifecycle (any thread) -----------------------------------------------------------------

    def start(self) -> None:
        """Dial every connection; returns at once (``health()`` and ``status()`` tell how it goes)."""
        self._started = self._rate_at = self.clock.monotonic()
        for conn in self._connections:
            conn.since = self._started
        reactor.callFromThread(self._dial)
        ensure_reactor()

    def stop(self) -> None:
        """Close every connection for good; ticks that arrive meanwhile are dropped. Returns at once."""
        if self._started and not self.stopped:
            self.stopped = True
            reactor.callFromThread(self._close)

    # -- reactor thread -------------------------------------------------------------------------

    def _dial(self) -> None:
        for conn in self._connections:
            dial_forever(conn.kws, self.backoff.initial_sec, self.backoff.factor)
        self._checker.start(min(1.0, self.stale_after / 4))  # now, too: it sets maxDelay

    def _close(self) -> None:
        self._checker.stop()
        for conn in self._connections:
            conn.kws.close()  # stops retrying, then the close handshake if connected

    def _check(self) -> None:
        """Cap the backoff by the time of day; redial connections silent too long in market hours."""
        now, wall = self.clock.monotonic(), self.clock.time()
        opened = session_opened(wall, now, self.market)
        hurry = session_opened(wall, now, self.market, PRE_OPEN) is not None
        for conn in self._connections:
            factory = conn.kws.factory
            factory.maxDelay = self.backoff.max_sec if hurry else self.backoff.max_closed_sec
            factory.delay = min(factory.delay, factory.maxDelay)
            if opened is None or not conn.up:
                continue
            quiet = now - max(conn.last_tick, conn.since, opened)
            if quiet > self.stale_after:
                self.forced_reconnects += 1
                log.warning("kite connection %d: no tick for %.1fs in market hours; reconnecting", conn.number, quiet)
                conn.drop(now, f"no tick for {quiet:.1f}s")

    def _on_ticks(self, conn: _Connection, message: bytes) -> None:
        if self.stopped:
            return
        ticks, malformed = decode(message, self._meta, int(self.clock.time() * NS))
        if malformed:
            self._malformed(conn, malformed, len(message))
        if not ticks:
            return
        conn.last_tick = self.last_tick = self.clock.monotonic()
        self.ticks += len(ticks)
        try:
            self.loop.call_soon_threadsafe(self.publish, ticks)
        except RuntimeError:  # the loop is closed: the daemon is exiting
            self.stopped = True

    def _malformed(self, conn: _Connection, packets: int, size: int) -> None:
        """Counted always; logged at most once a minute, as a broken sender would flood the journal."""
        self.malformed += packets
        now = self.clock.monotonic()
        if now - self._malformed_logged >= MALFORMED_LOG_SEC:
            self._malformed_logged = now
            log.warning("kite connection %d: %d malformed packet(s) in a message of %d bytes, skipped; the packets "
                        "around them were kept (%d malformed since start)", conn.number, packets, size, self.malformed)

    # -- any thread -----------------------------------------------------------------------------

    def market_open(self) -> bool:
        """Market hours now (``market``'s, on a trading day): the session-open gauge."""
        return session_opened(self.clock.time(), self.clock.monotonic(), self.market) is not None

    def health(self) -> str | None:
        """Why the feed is unhealthy: connections with no tick for ``stale_after_sec`` in market hours
        (down, or up but silent). Outside market hours, or before ``start()``: None."""
        now = self.clock.monotonic()
        opened = session_opened(self.clock.time(), now, self.market)
        if opened is None or not self._started or self.stopped:
            return None
        reasons = []
        for conn in self._connections:
            quiet = now - max(conn.last_tick, self._started, opened)
            if quiet > self.stale_after:
                state = "up" if conn.up else f"down for {now - conn.since:.1f}s"
                if not conn.up and conn.error:
                    state += f", {conn.error}"
                reasons.append(f"kite connection {conn.number}: no tick for {quiet:.1f}s in market hours ({state})")
        return "; ".join(reasons) or None

    def status(self) -> str:
        """Connections up, instruments, ticks/s since the previous call, last tick age, reconnects."""
        now = self.clock.monotonic()
        rate = (self.ticks - self._rate_ticks) / (now - self._rate_at) if now > self._rate_at else 0.0
        self._rate_at, self._rate_ticks = now, self.ticks
        up = sum(c.up for c in self._connections)
        age = f"{now - self.last_tick:.1f}s ago" if self.last_tick else "none yet"
        market = "" if self.market_open() else ", market closed"
        return (f"kite feed: {up}/{len(self._connections)} connections up, {self.instruments} instruments "
                f"({self.mode}), {rate:.0f} ticks/s, last tick {age}, {self.reconnects} reconnects "
                f"({self.forced_reconnects} after silence){market}")
