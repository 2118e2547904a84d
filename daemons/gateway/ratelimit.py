"""Failed logins, limited: a token bucket per client address and per token prefix.

Every request that presents a token that is not valid takes one from the bucket of its client (the
peer, or the ``X-Real-IP`` nginx sets) and one from the bucket of the token's first characters, so
one token tried from many addresses is limited too. A request without a token takes nothing. A
bucket holds ``burst`` and refills at ``per_minute``; while either of a request's buckets is empty,
the request is refused with 429 and ``Retry-After`` before its token is even looked at, valid or
not. At most ``max_keys`` buckets are kept, the least recently failed forgotten first, so a flood of
addresses cannot grow the gateway's memory.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

PREFIX_CHARS = 8  # of a presented token: enough to tell guesses apart, far too few to be a secret (256-bit tokens)
Key = tuple[str, str]  # (kind, value): ("client", "203.0.113.7") or ("token", "Xy3...")


@dataclass
class Bucket:
    tokens: float
    at: float  # when ``tokens`` was last brought up to date
    limited: bool = False  # refused since it last let a request through: the window is already audited


@dataclass(frozen=True)
class Limited:
    """A refusal: which kind of key is empty, when to retry, and whether this is its window's first."""

    by: str
    retry_after: int  # whole seconds, as the header wants them
    first: bool


class FailureLimiter:
    def __init__(self, burst: int, per_minute: float, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst, self.rate, self.max_keys, self.clock = burst, per_minute / 60.0, max_keys, clock
        self.buckets: OrderedDict[Key, Bucket] = OrderedDict()

    @staticmethod
    def keys(client: str, token: str) -> tuple[Key, Key]:
        return ("client", client), ("token", token[:PREFIX_CHARS])

    def check(self, keys: Sequence[Key]) -> Limited | None:
        """Before a token is checked: a refusal when any of ``keys`` has no failure left."""
        now = self.clock()
        refusal = None
        for key in keys:
            bucket = self._refilled(key, now)
            if bucket is None:
                continue
            if bucket.tokens >= 1:
                bucket.limited = False
            elif refusal is None:
                refusal = Limited(key[0], max(1, math.ceil((1 - bucket.tokens) / self.rate)), not bucket.limited)
                bucket.limited = True
        return refusal

    def failed(self, keys: Sequence[Key]) -> None:
        now = self.clock()
        for key in keys:
            bucket = self._refilled(key, now) or Bucket(float(self.burst), now)
            bucket.tokens -= 1
            self.buckets[key] = bucket
            self.buckets.move_to_end(key)
        while len(self.buckets) > self.max_keys:
            self.buckets.popitem(last=False)

    def _refilled(self, key: Key, now: float) -> Bucket | None:
        bucket = self.buckets.get(key)
        if bucket is not None:
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
        return bucket
