"""One view of whether Redis is up, for every loop of the bridge (the login: ``runtime/redis_login.py``).

redis-py reconnects by itself on the next command after a broken connection; what it does not do is
back off, or say once that Redis is gone. ``Link`` does both for every loop of the bridge: the first
failure of an outage logs one warning, the first success after it one info line, and each loop waits
``delay()`` (doubling from reconnect_min_sec to reconnect_max_sec) before its next try. Deadlines: a
call fails after socket_timeout_sec (above the XREAD block), so a partition is an error, not a stall.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from typing import Any, cast

from ..runtime.config import BridgeSection

log = logging.getLogger("algo.bridge")


def aw(result: object) -> Awaitable[Any]:
    """redis-py types each command as sync-or-async; the asyncio client always returns an awaitable (of a
    reply the bridge checks itself: anyone with the ACL user can write to the streams)."""
    return cast(Awaitable[Any], result)


class Link:
    """Up or down, as the last Redis call of any of the bridge's loops found it.

    ``closed`` ends the loops: cancelling a task inside a redis-py call is not reliable (redis-py 8.1
    on Python 3.11 sometimes swallows the CancelledError of a blocking read), so each loop also checks it.
    """

    def __init__(self, section: BridgeSection) -> None:
        self.section = section
        self.up = False
        self.closed = False  # the bridge is stopping: every loop ends after its current call
        self.outages = 0
        self.errors = 0
        self._down_since: float | None = None
        self._delay = section.reconnect_min_sec

    def ok(self, asked: float) -> None:
        """A call made at ``asked`` (monotonic) succeeded. One asked before the outage began (its reply was
        already on its way when another loop's call failed) says nothing about Redis now."""
        if self._down_since is not None and asked < self._down_since:
            return
        if self._down_since is not None:
            log.info("redis reachable again after %.1fs", time.monotonic() - self._down_since)
            self._down_since = None
        self.up = True
        self._delay = self.section.reconnect_min_sec

    def failed(self, exc: BaseException) -> float:
        """Note a failed call; the seconds to wait before the next try."""
        self.errors += 1
        self.up = False
        if self._down_since is None:
            self._down_since = time.monotonic()
            self.outages += 1
            log.warning("redis unreachable at %s (%s); retrying with backoff up to %gs, the order path held in "
                        "the outbox", self.section.redis_url, exc or type(exc).__name__, self.section.reconnect_max_sec)
        delay = self._delay
        self._delay = min(self._delay * 2, self.section.reconnect_max_sec)
        return delay

    @property
    def down_for(self) -> float:
        return 0.0 if self._down_since is None else time.monotonic() - self._down_since
