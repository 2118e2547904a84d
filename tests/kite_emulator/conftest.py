"""The emulator per test, the real kiteconnect clients against it, and the one Twisted reactor.

KiteTicker runs on Twisted's process-global reactor, which cannot be restarted: it is started once
in a daemon thread and every ticker call goes through it (``blockingCallFromThread``), since the
client is not thread-safe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kiteconnect import KiteConnect, KiteTicker
from twisted.internet.threads import blockingCallFromThread

from daemons.kite_emulator import Emulator
from daemons.runtime import kite_ticker
from daemons.runtime.kite_ticker import ensure_reactor
from tests.helpers import wait_until

INFY = 408065


@pytest.fixture(scope="session")
def reactor() -> Any:
    """Twisted's one reactor, in a daemon thread (it cannot be restarted), as the daemons run it."""
    ensure_reactor()
    wait_until(lambda: kite_ticker.reactor.running, 5, "the Twisted reactor")
    return kite_ticker.reactor


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(heartbeat_interval=0.2) as em:
        yield em


@pytest.fixture
def kite(emulator: Emulator) -> KiteConnect:
    return KiteConnect(emulator.api_key, emulator.access_token, root=emulator.root, timeout=5)


class TickerClient:
    """A real KiteTicker on the shared reactor, recording what its callbacks see."""

    def __init__(self, emulator: Emulator, reactor: Any, access_token: str | None = None,
                 retry_delay: float = 0.1) -> None:
        self.reactor = reactor
        self.retry_delay = retry_delay
        self.kws = KiteTicker(emulator.api_key, access_token or emulator.access_token, root=emulator.ws_url,
                              reconnect_max_delay=5)
        self.ticks: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []
        self.errors: list[tuple[int | None, Any]] = []
        self.heartbeats = 0
        self.connects = 0
        self.kws.on_ticks = lambda ws, ticks: self.ticks.extend(ticks)
        self.kws.on_message = self._on_message
        self.kws.on_connect = self._on_connect
        self.kws.on_order_update = lambda ws, data: self.updates.append(data)
        self.kws.on_error = lambda ws, code, reason: self.errors.append((code, reason))

    def _on_message(self, ws: Any, payload: bytes, is_binary: bool) -> None:
        if is_binary and len(payload) <= 4:
            self.heartbeats += 1

    def _on_connect(self, ws: Any, response: Any) -> None:
        self.connects += 1

    def connect(self) -> None:
        """Connect; reconnects start after ``retry_delay`` (x1.5 each time) instead of ~2.7 s."""

        def start() -> None:
            self.kws.connect()  # the reactor already runs: this only dials
            factory = self.kws.factory
            factory.initialDelay = factory.delay = self.retry_delay
            factory.factor = 1.5

        blockingCallFromThread(self.reactor, start)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a client method on the reactor thread."""
        return blockingCallFromThread(self.reactor, fn, *args)

    def close(self) -> None:
        self.call(self.kws.close)


@pytest.fixture
def ticker_client(emulator: Emulator, reactor: Any) -> Iterator[Callable[..., TickerClient]]:
    """Make connected ticker clients; they are closed (and stop retrying) after the test."""
    made: list[TickerClient] = []

    def make(**kwargs: Any) -> TickerClient:
        client = TickerClient(emulator, reactor, **kwargs)
        client.connect()
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
