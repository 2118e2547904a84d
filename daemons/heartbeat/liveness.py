"""Who is alive: the last heartbeat of every (host, unit), which ones have gone silent, and which hosts.

Pure bookkeeping on the times it is given, so the transitions are tested without a clock. The
expected units (the config's: this host's daemons, and the units it names for other hosts, whose
heartbeats come over the bridges) are watched from the start, so one that never came up is flagged
as well as one that stopped; a unit seen but not expected is watched from its first heartbeat. A host
is silent when every unit watched on it is: from here it looks down, or cut off (its bridge, or Redis).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from ..runtime.heartbeat import Heartbeat


class State(Enum):
    WAITING = "waiting"  # expected, nothing heard yet (within the limit)
    ALIVE = "alive"
    SILENT = "silent"  # nothing heard for longer than the limit (or ever)


class Happening(Enum):
    HEARD = "heard"  # a heartbeat arrived
    QUIET = "quiet"  # the limit passed since the last heartbeat (or since watching began)


TRANSITIONS: dict[tuple[State, Happening], State] = {
    (State.WAITING, Happening.HEARD): State.ALIVE,
    (State.WAITING, Happening.QUIET): State.SILENT,
    (State.ALIVE, Happening.HEARD): State.ALIVE,
    (State.ALIVE, Happening.QUIET): State.SILENT,
    (State.SILENT, Happening.HEARD): State.ALIVE,
    (State.SILENT, Happening.QUIET): State.SILENT,
}


@dataclass
class Peer:
    host: str
    unit: str
    expected: bool
    since: float  # monotonic: the last heartbeat, or when watching began
    state: State = State.WAITING
    last: Heartbeat | None = None
    seen_at: float | None = None  # wall clock (this host's) of the last heartbeat

    @property
    def name(self) -> str:
        return f"{self.unit} on {self.host}"


class Change(NamedTuple):
    peer: Peer
    before: State
    quiet_for: float  # seconds since the last heartbeat (or since watching began)


class Liveness:
    def __init__(self, host: str, silent_after: float) -> None:
        self.host = host
        self.silent_after = silent_after
        self.peers: dict[tuple[str, str], Peer] = {}

    def expect(self, units: Iterable[str], now: float, others: Mapping[str, Iterable[str]] | None = None) -> None:
        """The config's units: ``units`` on this host, ``others`` by host. A unit of a host the config names (this
        one included) that it no longer expects is forgotten (a heartbeat brings it back), as is every unit of a
        host taken out of the config; units of hosts the config never named are not its to judge and stay."""
        wanted = {self.host: set(units)} | {host: set(names) for host, names in (others or {}).items()}
        for key, peer in list(self.peers.items()):
            was = peer.expected
            peer.expected = peer.unit in wanted.get(peer.host, ())
            if not peer.expected and (was or peer.host in wanted):
                del self.peers[key]
        for host, names in wanted.items():
            for unit in names:
                self.peers.setdefault((host, unit), Peer(host, unit, True, now))

    def heard(self, beat: Heartbeat, now: float, wall: float) -> Change | None:
        peer = self.peers.get((beat.host, beat.unit))
        if peer is None:
            peer = self.peers[(beat.host, beat.unit)] = Peer(beat.host, beat.unit, False, now)
        quiet_for = now - peer.since
        peer.last, peer.seen_at, peer.since = beat, wall, now
        return self._move(peer, Happening.HEARD, quiet_for)

    def check(self, now: float) -> list[Change]:
        """The peers that just went silent."""
        changes = []
        for peer in self.peers.values():
            if now - peer.since > self.silent_after:
                change = self._move(peer, Happening.QUIET, now - peer.since)
                if change is not None:
                    changes.append(change)
        return changes

    def pardon(self, now: float) -> None:
        """The watcher was blind (its own heartbeats did not come back): nobody's silence in that time is
        known, so every peer's limit counts afresh from now."""
        for peer in self.peers.values():
            peer.since = max(peer.since, now)

    def silent(self) -> list[Peer]:
        return [p for p in self.peers.values() if p.state is State.SILENT]

    def hosts(self) -> dict[str, bool]:
        """Every host watched, and whether it is silent (every unit watched on it is)."""
        silent: dict[str, bool] = {}
        for peer in self.peers.values():
            silent[peer.host] = silent.get(peer.host, True) and peer.state is State.SILENT
        return silent

    @staticmethod
    def _move(peer: Peer, happening: Happening, quiet_for: float) -> Change | None:
        before = peer.state
        peer.state = TRANSITIONS[(before, happening)]
        return Change(peer, before, quiet_for) if peer.state is not before else None
