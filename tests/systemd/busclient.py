"""Talk to the bus inside a sandbox from the test process, through /proc/PID/root."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from daemons.algoctl.sandbox import Sandbox
from daemons.runtime.client import BusClient
from daemons.runtime.config import BusSection
from daemons.runtime.envelope import MARKETDATA_TICK, Event, tick_key


def client_for(sandbox: Sandbox, source: str = "test-client") -> BusClient:
    return BusClient.for_config(BusSection(), source, socket_path=str(sandbox.path("/run/algo/bus.sock")))


def publish_once(sandbox: Sandbox, topic: str, payload: dict[str, Any], trace: str | None = None) -> None:
    async def go() -> None:
        bus = client_for(sandbox)
        await bus.start()
        assert bus.connected, "could not reach the sandbox's bus"
        bus.publish(topic, payload, trace=trace)
        await bus.close()

    asyncio.run(go())


class Listener:
    """A bus client on its own thread and loop, recording (monotonic receive time, event)."""

    def __init__(self, sandbox: Sandbox, *patterns: str, source: str = "test-listener",
                 ticks_of: frozenset[str] | None = None) -> None:
        """``ticks_of``: with a marketdata pattern, only these symbols' ticks (a key filter), kept in
        ``last_tick`` by symbol rather than in ``events``."""
        self.events: list[tuple[float, Event]] = []
        self.last_tick: dict[str, dict[str, Any]] = {}
        self.loop = asyncio.new_event_loop()
        self.client = client_for(sandbox, source)
        for pattern in patterns:
            self.client.subscribe(pattern, lambda ev: self.events.append((time.monotonic(), ev)))
        if ticks_of is not None:
            self.client.subscribe(MARKETDATA_TICK, lambda ev: self.last_tick.__setitem__(ev.payload["symbol"], ev.payload))
            self.client.filter_keys(MARKETDATA_TICK, ticks_of)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Listener:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.client.start(), self.loop).result(5)
        return self

    def wait_connected(self, timeout: float = 10.0) -> None:
        """Block until the client is on the bus: events published before that never reach it (a client
        started before the bus's socket exists retries with a back-off)."""
        deadline = time.monotonic() + timeout
        while not self.client.connected:
            assert time.monotonic() < deadline, "the listener could not reach the sandbox's bus"
            time.sleep(0.02)

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run fn on the client's loop (the client is not thread-safe)."""
        async def go() -> Any:
            return fn(*args, **kwargs)
        return asyncio.run_coroutine_threadsafe(go(), self.loop).result(5)

    def publish(self, topic: str, payload: dict[str, Any], **kwargs: Any) -> Event:
        event: Event = self.call(self.client.publish, topic, payload, **kwargs)
        return event

    def caused_by(self, symbol: str) -> dict[str, Any]:
        """The fields an engine's signal carries about the tick that caused it: here the newest seen."""
        tick = self.last_tick[symbol]
        return {"tick_price": tick["last_price"], "tick_exchange_ts": tick["exchange_ts"]}

    def tick(self, payload: dict[str, Any]) -> Event:
        """Publish a tick with its frame key, as the feed does (subscribers' key filters match on it)."""
        return self.publish(MARKETDATA_TICK, payload, key=tick_key(payload))

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.client.close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()
