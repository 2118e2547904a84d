"""Kite's order updates, pushed over a ticker WebSocket, into the live broker adapter.

Kite sends every change of the account's orders as a text message on each ticker connection of
the API key; algo-execution holds one connection of its own with no instrument subscribed (the
feed leaves it one of the key's three), so order news does not depend on algo-marketdata being
up. It redials forever like the feed. What it misses while down, the order-book poll brings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kiteconnect import KiteTicker
from twisted.internet import reactor

from ..runtime.config import KiteSection
from ..runtime.kite_ticker import CONNECT_TIMEOUT_SEC, dial_forever, ensure_reactor

log = logging.getLogger("algo.execution")

REDIAL_FIRST_SEC, REDIAL_FACTOR, REDIAL_MOST_SEC = 0.5, 2.0, 5.0


class OrderUpdates:
    """``on_update(data)`` for each order update, called on the reactor thread
    (``KiteBroker.on_order_update`` hands it to the loop)."""

    def __init__(self, kite: KiteSection, on_update: Callable[[dict[str, Any]], None]) -> None:
        if kite.api_key is None or kite.access_token is None:
            raise ValueError("order updates need kite.api_key and kite.access_token (run `algoctl login`)")
        self.kws = KiteTicker(kite.api_key.get_secret_value(), kite.access_token.get_secret_value(),
                              root=kite.ticker_root, connect_timeout=CONNECT_TIMEOUT_SEC)
        self.kws.on_order_update = lambda ws, data: on_update(data)
        self.kws.on_connect = self._on_connect
        self.kws.on_close = self._on_close
        self.up = False
        self.connects = 0
        self.started = False
        self._stopped = False

    def start(self) -> None:
        self.started = True
        reactor.callFromThread(self._dial)
        ensure_reactor()

    def stop(self) -> None:
        self._stopped = True
        reactor.callFromThread(self.kws.close)

    def _dial(self) -> None:
        dial_forever(self.kws, REDIAL_FIRST_SEC, REDIAL_FACTOR)
        self.kws.factory.maxDelay = REDIAL_MOST_SEC

    def _on_connect(self, ws: KiteTicker, response: Any) -> None:
        self.up = True
        self.connects += 1
        log.info("order updates: ticker connected%s", " again" if self.connects > 1 else "")

    def _on_close(self, ws: KiteTicker, code: int | None, reason: str | None) -> None:
        if self.up and not self._stopped:
            log.warning("order updates: ticker connection closed (%s: %s); redialling, the order-book poll "
                        "covers the gap", code, reason)
        self.up = False
