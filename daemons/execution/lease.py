"""The execution lease: one active algo-execution per broker account across hosts, the others standing by.

A key in Redis per account, set only if absent (or marked released) and with a time to live (a Lua
script: ``SET ... PX``), holds the active's token and a fencing number (``INCR`` of a second key: each
new holder's is higher); the active extends it, only while it is still its own, every third of
``ttl_sec`` (a Lua compare-and-extend), and on a clean stop marks it released, so a standby takes over
at once.

Before every send (and every paper fill) the active asks ``refusal()``, which needs no Redis call: the
lease is ours until ``valid_until`` (the time *before* the last successful extend, plus the TTL: Redis
cannot have let it go earlier), and a send is allowed only while more than ``margin_sec`` of it is
left, the margin covering the longest a send takes. A process paused (SIGSTOP, a long GC, a frozen VM)
or cut off from Redis past that point finds its time run out when it wakes and sends nothing: the
monotonic clock kept running.

A new holder sends nothing for one TTL after it got the key (``usable_from``), unless its last holder
released it (having stopped sending): the key can vanish before it expires (an operator's DEL, a Redis
that restarted without its data), and a former holder may believe in its lease until its own
``valid_until``, which lies before our acquisition plus the TTL. So the standby waits out the lease in
every case but a release, and what the former active sent (each send started
more than the margin before its lease ran out) is at the broker when the new one reconciles by tag.

Fencing stops short of the broker: Kite cannot check a fencing number, so a send that starts just
before a pause and lands after it is the window left; the tag lookup (one order per client id) is
what keeps such an order single. The fencing number is logged with every send and exported.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import time
from collections.abc import Awaitable
from typing import Any, ClassVar, cast

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Gauge

from ..runtime.config import ExecutionLease
from ..runtime.daemon import pause
from ..runtime.redis_login import UNREACHABLE, connect, password

log = logging.getLogger("algo.execution")

# KEYS: lease, fence; ARGV: token, ttl ms. Acquired: {1, fence, 1 if its last holder released it} (the key
# then holds "token|fence"); held by another: {0, its value}. Free: absent, or "released|fence".
ACQUIRE = """
local held = redis.call('GET', KEYS[1])
if held and string.sub(held, 1, 9) ~= 'released|' then return {0, held} end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. fence, 'PX', ARGV[2])
return {1, tostring(fence), held and 1 or 0}
"""
# KEYS: lease; ARGV: our value, ttl ms. 1 if extended, 0 if the lease is no longer ours.
EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# KEYS: lease; ARGV: our value, our fence, ttl ms. 1 if released (marked so: the next holder need not wait),
# 0 if it was not ours (any more).
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], 'released|' .. ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""


def _aw(result: object) -> Awaitable[Any]:
    """redis-py types eval as sync-or-async; the asyncio client always returns an awaitable."""
    return cast(Awaitable[Any], result)


class Lease:
    """This process's view of the account's lease; ``redis`` is the client its calls go through."""

    # What "Redis is out of reach" raises, for callers that do not import redis themselves: algo-execution
    # imports this module only when a lease is configured (redis-py is ~6 MB of RSS a process).
    unreachable: ClassVar[tuple[type[Exception], ...]] = UNREACHABLE

    @classmethod
    def open(cls, section: ExecutionLease, holder: str, registry: CollectorRegistry) -> Lease:
        """The lease with a client logged in as its ACL user (the password credential of algo-execution.service)."""
        secret = password(section, "daemons.execution.lease.password_credential", "algo-execution.service")
        return cls(section, holder, connect(section, secret), registry)

    def __init__(self, section: ExecutionLease, holder: str, redis: aioredis.Redis, registry: CollectorRegistry) -> None:
        self.section = section
        self.redis = redis
        self.key = f"{section.key_prefix}lease:execution:{section.account}"
        self.fence_key = f"{section.key_prefix}fence:execution:{section.account}"
        self.token = f"{section.holder or holder}:{os.getpid()}:{secrets.token_hex(4)}"
        self.ttl_ms = round(section.ttl_sec * 1000)
        self.value = ""  # "token|fence" while the lease is ours
        self.fence = 0
        self.valid_until = -math.inf  # monotonic: Redis keeps the lease ours at least until then
        self.usable_from = math.inf  # monotonic: no send before (a former holder's lease has surely run out)
        self.other = ""  # the holder seen by the last failed acquire
        self.held = Gauge("algo_execution_lease_held", "1 while this execution holds its account's lease", registry=registry)
        self.fence_gauge = Gauge("algo_execution_lease_fence", "The fencing number of the lease this execution holds or "
                                 "last held (0: never)", registry=registry)
        self.takeovers = Counter("algo_execution_lease_takeovers", "Times this execution acquired the lease",
                                 registry=registry)
        self.refused = Counter("algo_execution_lease_refused_sends", "Sends (and paper fills) refused because the lease "
                               "was not surely ours", registry=registry)

    @property
    def ours(self) -> bool:
        return bool(self.value)

    async def acquire(self) -> bool:
        """One try: the lease if nobody holds it (counted as a takeover), else note who does."""
        asked = time.monotonic()
        got, what, *released = await _aw(self.redis.eval(ACQUIRE, 2, self.key, self.fence_key, self.token, self.ttl_ms))
        answered = time.monotonic()
        if not int(got):
            self.other = what.decode() if isinstance(what, bytes) else str(what)
            return False
        self.fence = int(what)
        self.value = f"{self.token}|{self.fence}"
        self.valid_until = asked + self.section.ttl_sec
        handed_over = bool(int(released[0]))  # its last holder stopped sending before it let go
        self.usable_from = asked if handed_over else answered + self.section.ttl_sec
        self.other = ""
        self.held.set(1)
        self.fence_gauge.set(self.fence)
        self.takeovers.inc()
        if handed_over:
            log.warning("execution lease %s acquired (fence %d), released by its last holder", self.key, self.fence)
        else:
            log.warning("execution lease %s acquired (fence %d); first send after %gs, once any former holder's lease "
                        "has surely run out", self.key, self.fence, self.section.ttl_sec)
        return True

    async def extend(self) -> bool:
        """Compare-and-extend; False when the lease is no longer ours (then it is dropped here too)."""
        asked = time.monotonic()
        if int(await _aw(self.redis.eval(EXTEND, 1, self.key, self.value, self.ttl_ms))):
            self.valid_until = asked + self.section.ttl_sec
            return True
        self._drop()
        return False

    async def release(self) -> None:
        """A clean stop (nothing in flight) hands the lease over at once: the key, marked released, lets the
        next holder send without waiting out a former holder's lease."""
        if self.ours:
            value = self.value
            self._drop()
            await _aw(self.redis.eval(RELEASE, 1, self.key, value, self.fence, self.ttl_ms))
            log.info("execution lease %s released (fence %d)", self.key, self.fence)

    async def wait_until_ours(self, stopping: asyncio.Event) -> bool:
        """Standing by: try for the lease every tenth of its TTL until it is ours (False: asked to stop)."""
        trouble = ""
        while not stopping.is_set():
            try:
                if await self.acquire():
                    return True
                trouble = ""
            except self.unreachable as exc:
                if not trouble:
                    log.warning("standby: redis unreachable (%s); trying again for the lease", exc)
                trouble = str(exc)
            await pause(stopping, self.section.ttl_sec / 10)
        return False

    async def keep(self, stopping: asyncio.Event) -> str:
        """Extend the lease every third of its TTL; return why it was lost ('' when asked to stop). A Redis out of
        reach counts only once the lease may have run out: until then the checks before each send still allow it."""
        trouble = ""
        while not stopping.is_set():
            await pause(stopping, self.section.ttl_sec / 3)
            if stopping.is_set():
                break
            try:
                if not await self.extend():
                    return "another execution holds it"
                if trouble:
                    log.info("redis reachable again; execution lease extended")
                trouble = ""
            except self.unreachable as exc:
                if self.left() <= self.section.margin_sec:
                    return f"redis unreachable ({exc}) until the lease ran out"
                if not trouble:
                    log.warning("redis unreachable (%s) while extending the execution lease; %.1fs of it left", exc,
                                self.left())
                trouble = str(exc)
        return ""

    async def hand_over(self, in_flight: int) -> None:
        """At a clean stop: released, unless a live send is still in flight (it may land after a standby
        reconciled): then the lease runs out by itself. The Redis client is closed either way."""
        try:
            if in_flight:
                log.warning("execution lease kept until it expires: %d sends still in flight", in_flight)
            else:
                await self.release()
        except self.unreachable as exc:
            log.warning("execution lease not released (redis unreachable: %s); a standby takes over when it expires", exc)
        await self.redis.aclose()

    def _drop(self) -> None:
        self.value = ""
        self.valid_until = -math.inf
        self.usable_from = math.inf
        self.held.set(0)

    def left(self) -> float:
        """Seconds the lease is surely ours (negative once it may not be)."""
        return self.valid_until - time.monotonic()

    def refusal(self) -> str:
        """Why nothing may be sent now ('' when a send may go): the check before every send."""
        now = time.monotonic()
        if not self.ours:
            return "this execution does not hold the lease"
        if now < self.usable_from:
            return f"the lease was just acquired: a former holder's may still run for {self.usable_from - now:.1f}s"
        if self.valid_until - now <= self.section.margin_sec:
            return (f"the lease is surely ours for only {self.valid_until - now:.1f}s, not more than the margin "
                    f"({self.section.margin_sec:g}s)")
        return ""

    def status(self) -> str:
        if self.ours:
            return f"active (lease fence {self.fence}, {max(0.0, self.left()):.1f}s left)"
        holder = self.other.rsplit("|", 1)
        if len(holder) != 2:
            held_by = "free"
        elif holder[0] == "released":
            held_by = f"released by its last holder (fence {holder[1]})"
        else:
            held_by = f"held by {holder[0]} (fence {holder[1]})"
        return f"standby (lease {held_by})"
