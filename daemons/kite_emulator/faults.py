"""Fault switches: Kite on a bad day, on demand, so clients' retry and recovery paths get exercised.

Every switch is thread-safe (tests flip them while server threads read them) and bounded: by a
count of uses, by seconds, or both (whichever runs out first ends it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Window:
    """How long a fault lasts: the next ``count`` uses and/or until ``until`` (monotonic seconds)."""

    count: int | None
    until: float | None
    prefix: str = "/"

    @classmethod
    def make(cls, count: int | None, seconds: float | None, prefix: str = "/") -> Window:
        if count is None and seconds is None:
            raise ValueError("a fault needs a count, seconds, or both")
        if count is not None and count < 1:
            raise ValueError("count must be at least 1")
        return cls(count, None if seconds is None else time.monotonic() + seconds, prefix)

    def take(self, path: str = "/") -> bool:
        """Use the fault once, if it still applies to ``path``."""
        if not path.startswith(self.prefix):
            return False
        if self.until is not None and time.monotonic() >= self.until:
            return False
        if self.count is not None:
            if self.count <= 0:
                return False
            self.count -= 1
        return True

    def describe(self) -> dict[str, Any]:
        left = None if self.until is None else max(0.0, round(self.until - time.monotonic(), 3))
        return {"count": self.count, "seconds_left": left, "prefix": self.prefix}


class Faults:
    """The switches; the REST and ticker servers ask them on every request or message."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rate_limit: Window | None = None
        self._slow: Window | None = None
        self._delay = 0.0
        self._swallow = 0
        self._refuse_until = 0.0
        self._drop_after = 0
        self._drops_left = 0
        self._drop_generation = 0
        # Set by the ticker server: a new drop fault applies to connections already open.
        self.on_ws_drop: Callable[[], None] | None = None

    # -- switches -------------------------------------------------------------------------------

    def rate_limit(self, count: int | None = None, seconds: float | None = None, prefix: str = "/") -> None:
        """Answer 429 "Too many requests" (NetworkException) to REST paths under ``prefix``."""
        window = Window.make(count, seconds, prefix)
        with self._lock:
            self._rate_limit = window

    def slow(self, delay: float, count: int | None = None, seconds: float | None = None,
             prefix: str = "/") -> None:
        """Hold replies ``delay`` seconds *after* handling them: a client that times out has still
        placed its order, as with Kite under load."""
        window = Window.make(count, seconds, prefix)
        with self._lock:
            self._slow, self._delay = window, delay

    def swallow_replies(self, count: int = 1) -> None:
        """Put the next ``count`` place_order requests in the book but never answer them; the reply
        is held until the client disconnects (a crash between accept and reply)."""
        with self._lock:
            self._swallow = count

    def refuse_ws(self, seconds: float) -> None:
        """Answer WebSocket handshakes with HTTP 503 for ``seconds``."""
        with self._lock:
            self._refuse_until = time.monotonic() + seconds

    def drop_ws(self, after_messages: int = 0, times: int = 1) -> None:
        """Cut the TCP connection (no close frame) of a ticker client after it has been sent
        ``after_messages`` tick messages (0: now, or right after the handshake), ``times`` times."""
        if after_messages < 0 or times < 1:
            raise ValueError("after_messages must be >= 0 and times >= 1")
        with self._lock:
            self._drop_after, self._drops_left = after_messages, times
            self._drop_generation += 1
        if self.on_ws_drop:
            self.on_ws_drop()

    def clear(self) -> None:
        """Every switch off (token expiry is session state: a new session ends it)."""
        with self._lock:
            self._rate_limit = self._slow = None
            self._delay = 0.0
            self._swallow = 0
            self._refuse_until = 0.0
            self._drops_left = 0

    def configure(self, spec: dict[str, Any]) -> None:
        """Set switches from the admin route's JSON, e.g. ``{"rate_limit": {"count": 3}}``."""
        setters: dict[str, Callable[..., None]] = {
            "rate_limit": self.rate_limit, "slow": self.slow, "swallow_replies": self.swallow_replies,
            "refuse_ws": self.refuse_ws, "drop_ws": self.drop_ws,
        }
        unknown = set(spec) - set(setters)
        if unknown:
            raise ValueError(f"unknown fault(s): {', '.join(sorted(unknown))}; known: {', '.join(setters)}")
        for name, args in spec.items():
            setters[name](**args)

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "rate_limit": self._rate_limit.describe() if self._rate_limit else None,
                "slow": {"delay": self._delay, **self._slow.describe()} if self._slow else None,
                "swallow_replies": self._swallow,
                "refuse_ws_seconds_left": max(0.0, round(self._refuse_until - time.monotonic(), 3)),
                "drop_ws": {"after_messages": self._drop_after, "times": self._drops_left},
            }

    # -- asked by the servers -------------------------------------------------------------------

    def take_rate_limit(self, path: str) -> bool:
        with self._lock:
            return self._rate_limit is not None and self._rate_limit.take(path)

    def take_delay(self, path: str) -> float:
        with self._lock:
            return self._delay if self._slow is not None and self._slow.take(path) else 0.0

    def take_swallow(self) -> bool:
        with self._lock:
            if self._swallow <= 0:
                return False
            self._swallow -= 1
            return True

    def ws_refused(self) -> bool:
        with self._lock:
            return time.monotonic() < self._refuse_until

    @property
    def drop_generation(self) -> int:
        """Changes with every drop fault, so connections restart their message count."""
        with self._lock:
            return self._drop_generation

    def take_ws_drop(self, sent: int) -> bool:
        """Whether a connection that has sent ``sent`` tick messages since the fault must drop now."""
        with self._lock:
            if self._drops_left > 0 and sent >= self._drop_after:
                self._drops_left -= 1
                return True
            return False
