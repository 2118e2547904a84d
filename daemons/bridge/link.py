"""The bridge's Redis connection: who it logs in as, its deadlines, and one view of whether Redis is up.

redis-py reconnects by itself on the next command after a broken connection; what it does not do is
back off, or say once that Redis is gone. ``Link`` does both for every loop of the bridge: the first
failure of an outage logs one warning, the first success after it one info line, and each loop waits
``delay()`` (doubling from reconnect_min_sec to reconnect_max_sec) before its next try. Deadlines: a
call fails after socket_timeout_sec (above the XREAD block), so a partition is an error, not a stall.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..runtime.config import BridgeSection, ConfigError, Problem

log = logging.getLogger("algo.bridge")

# What means "Redis is unreachable" (retry with backoff) rather than "Redis refused this command".
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)


def aw(result: object) -> Awaitable[Any]:
    """redis-py types each command as sync-or-async; the asyncio client always returns an awaitable (of a
    reply the bridge checks itself: anyone with the ACL user can write to the streams)."""
    return cast(Awaitable[Any], result)


def password(section: BridgeSection, credentials: str | None = None) -> str:
    """The ACL user's password from the systemd credential (LoadCredential=); ConfigError if it is absent."""
    directory = credentials or os.environ.get("CREDENTIALS_DIRECTORY")
    file = Path(directory or "/nonexistent") / section.password_credential
    try:
        return file.read_text().strip()
    except OSError as exc:
        raise ConfigError("credentials", [Problem(
            "daemons.bridge.password_credential",
            f"cannot read the credential {section.password_credential!r} ({exc.strerror}): install it and "
            f"load it in algo-bridge.service with LoadCredential={section.password_credential}:PATH")]) from None


def connect(section: BridgeSection, secret: str) -> aioredis.Redis:
    """A client for the section's Redis; nothing is sent until the first command."""
    tls: dict[str, Any] = {"ssl_ca_certs": str(section.tls_ca_file), "ssl_cert_reqs": "required"} if section.tls_ca_file else {}
    client: aioredis.Redis = aioredis.Redis.from_url(
        section.redis_url,
        username=section.username,
        password=secret,
        socket_timeout=section.socket_timeout_sec,
        socket_connect_timeout=section.socket_timeout_sec,
        retry=Retry(NoBackoff(), 0),  # the bridge's loops retry, with backoff (Link)
        driver_info=None,  # no CLIENT SETINFO: the ACL user may run only stream commands and PING
        **tls,
    )
    return client


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
