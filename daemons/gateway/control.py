"""The gateway's handle on the control plane's database (daemons/control_plane).

Opened on first use, not at start: the gateway still serves the fleet's status and the kill switch
while the database is missing, not yet migrated or unreachable, and its strategy routes answer 503
with the reason until it is back. Store calls are synchronous (the database's driver), so each runs in a worker
thread: a write waiting on SQLite's lock must not stall the event loop that also feeds the watchdog.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from ..control_plane.database import DatabaseError, SchemaError, first_line
from ..control_plane.store import Store

log = logging.getLogger("algo.gateway")
T = TypeVar("T")


class Unavailable(RuntimeError):
    """The control plane's database cannot be used now; the message says why."""


class ControlPlane:
    def __init__(self, url: str) -> None:
        self.url = url
        self.failures = 0  # calls refused because the database could not be used
        self._store: Store | None = None
        self._lock = threading.Lock()

    def store(self) -> Store:
        with self._lock:
            if self._store is None:
                try:
                    self._store = Store.open(self.url)
                except (SchemaError, DatabaseError, OSError) as exc:
                    raise Unavailable(first_line(exc)) from None
            return self._store

    async def call(self, fn: Callable[[Store], T]) -> T:
        """``fn(store)`` in a worker thread; Unavailable when the database cannot be opened or fails."""
        return await asyncio.to_thread(self.run, fn)

    def run(self, fn: Callable[[Store], T]) -> T:
        """``fn(store)`` in this thread (one that may block: not the event loop's)."""
        try:
            return fn(self.store())
        except Unavailable as exc:
            self.failures += 1
            log.warning("the control plane's database is unavailable: %s", exc)
            raise
        except DatabaseError as exc:
            self.failures += 1
            log.warning("the control plane's database failed: %s", first_line(exc))
            raise Unavailable(first_line(exc)) from None

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
