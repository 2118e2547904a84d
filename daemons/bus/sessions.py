"""Order-path events kept for a subscriber that went away, handed to it when it comes back.

A daemon that crashes is back within a second (systemd restarts it after 200 ms); what the fleet
published meanwhile would otherwise reach nobody in its name: the journal's files would miss those
signals, decisions, orders and fills. So when a named peer (its HELLO) leaves, the broker keeps what
matches its subscriptions, for KEEP_SEC and up to KEEP_BYTES, and writes it to the next peer of that
name before anything else. Market data and heartbeats are not kept: they are about now. Frames already
in the dead process's socket are beyond reach, except for a peer that acknowledges what it made durable
(the journal, wire.py ACK): what it was sent and did not acknowledge starts its session, so it gets that
again (and ignores what it already has).

The broker itself restarting is the other side of it: its clients reconnect one by one, and what the
first ones publish would reach nobody in the names of those not back yet (a fill that risk never
counts). So a new broker keeps the order path of its first EARLY_SEC (``Arrivals``), with the names
each event reached, and a client that says it is reconnecting (``wire.AGAIN`` in its HELLO) gets, as
it subscribes, what matches and did not reach its name. A client connecting for the first time gets
nothing old: a subscription starts now.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..runtime import wire
from ..runtime.envelope import MARKET_DATA_MARKS

log = logging.getLogger("algo.bus")

KEEP_SEC = 30.0  # a restart takes about a second; a unit stopped on purpose is not waited for
KEEP_BYTES = 4 << 20
NOT_KEPT = (*MARKET_DATA_MARKS, b"health.")
EARLY_SEC = 5.0  # clients reconnect at once (within reconnect_max_sec when the broker flapped)


@dataclass
class Session:
    name: str
    patterns: list[str]
    since: float  # monotonic time it left
    chunks: list[tuple[bytes, int]] = field(default_factory=list)  # runs of whole frames, and how many
    size: int = 0
    frames: int = 0
    lost: int = 0  # frames that did not fit in KEEP_BYTES


class Sessions:
    """The broker's sessions by peer name; ``keep`` is on the routing path, so it costs nothing while empty."""

    def __init__(self) -> None:
        self.by_name: dict[str, Session] = {}
        self._routes: dict[bytes, list[Session]] = {}

    def leave(self, name: str, patterns: set[str], now: float, unacked: list[tuple[bytes, int]]) -> None:
        """``name`` left; ``unacked``: what it was sent and did not acknowledge, handed over first."""
        if name == "?" or not patterns:
            return
        self.by_name[name] = Session(name, sorted(patterns), now, unacked, sum(len(c) for c, _ in unacked),
                                     sum(n for _, n in unacked))
        self._routes.clear()

    def keep(self, topic: bytes, chunk: bytes, count: int, now: float) -> int:
        """Keep ``count`` frames of ``topic`` for every session that wants them; returns how many frames were
        dropped instead (over KEEP_BYTES, or kept for a session that expired now)."""
        if topic.startswith(NOT_KEPT):
            return 0
        sessions = self._routes.get(topic)
        if sessions is None:
            name = topic.decode()
            sessions = self._routes[topic] = [s for s in self.by_name.values()
                                              if any(wire.matches(p, name) for p in s.patterns)]
        lost = 0
        for session in sessions:
            if now - session.since > KEEP_SEC:
                lost += self._expire(session)
            elif session.size + len(chunk) > KEEP_BYTES:
                session.lost += count
                lost += count
            else:
                session.chunks.append((chunk, count))
                session.size += len(chunk)
                session.frames += count
        return lost

    def resume(self, name: str, now: float) -> Session | None:
        """The session of a peer that says its name again, if it is recent enough to hand over."""
        session = self.by_name.pop(name, None)
        if session is None:
            return None
        self._routes.clear()
        return session if now - session.since <= KEEP_SEC else None

    def _expire(self, session: Session) -> int:
        if self.by_name.get(session.name) is not session:
            return 0
        del self.by_name[session.name]
        self._routes.clear()
        log.info("stopped keeping events for %s: not back after %.0fs (%d kept events dropped)",
                 session.name, KEEP_SEC, session.frames)
        return session.frames


@dataclass
class Early:
    topic: str
    chunk: bytes
    count: int
    reached: frozenset[str]  # the names it was delivered to


class Arrivals:
    """The order path of a new broker's first EARLY_SEC, for the clients that were connected to the broker
    before it and are not back yet. Costs nothing after the window: ``open`` turns false for good."""

    def __init__(self, started: float) -> None:
        self.until = started + EARLY_SEC
        self.events: list[Early] = []
        self.size = 0
        self.open = True
        self.seen: set[str] = set()  # names that connected to this broker (sessions cover them from then on)
        self.handed: dict[str, set[int]] = {}  # name -> the events already handed to it

    def keep(self, topic: bytes, chunk: bytes, count: int, reached: frozenset[str], now: float) -> None:
        if now >= self.until:
            self._close()
        elif not topic.startswith(NOT_KEPT) and self.size + len(chunk) <= KEEP_BYTES:
            self.events.append(Early(topic.decode(), chunk, count, reached))
            self.size += len(chunk)

    def arrived(self, name: str) -> bool:
        """A named peer connected; True the first time this broker sees the name."""
        first = name not in self.seen
        self.seen.add(name)
        return first

    def missed(self, name: str, pattern: str, now: float) -> list[Early]:
        """The events of ``pattern`` that did not reach ``name``, not handed to it before, in order."""
        if now >= self.until:
            self._close()
            return []
        handed = self.handed.setdefault(name, set())
        out = []
        for n, early in enumerate(self.events):
            if n not in handed and name not in early.reached and wire.matches(pattern, early.topic):
                handed.add(n)
                out.append(early)
        return out

    def _close(self) -> None:
        if self.open:
            self.open = False
            self.events.clear()
            self.handed.clear()
            self.size = 0
