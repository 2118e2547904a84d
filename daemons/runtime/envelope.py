"""The event envelope every bus message carries, and the fleet's topics (docs/ARCHITECTURE.md, Envelope)."""

from __future__ import annotations

import os
import time
from typing import Any, NamedTuple

import orjson

# Topics are a contract with dashboards and other daemons: add, never rename.
MARKETDATA_TICK = "marketdata.tick"
STRATEGY_SIGNAL = "strategy.signal"
RISK_APPROVED = "risk.approved"
RISK_BLOCKED = "risk.blocked"
EXECUTION_ORDER = "execution.order"
EXECUTION_FILL = "execution.fill"
EXECUTION_REJECT = "execution.reject"
CONTROL_PAUSE = "control.pause"
CONTROL_RESUME = "control.resume"
CONTROL_RELOAD = "control.reload"
CONTROL_KILL_SWITCH = "control.kill_switch"
CONTROL_SYNC = "control.sync"  # a restarted daemon asks for what it may have missed (see engine, execution)
HEALTH_HEARTBEAT = "health.heartbeat"

# Topics under this prefix are latest-value: a slow subscriber gets the newest tick per key.
CONFLATED_PREFIX = "marketdata."


class Event(NamedTuple):
    """id, ts (ns since epoch), type (the topic), source, seq (per source and topic), trace, payload.

    A tuple: cheap to build on the hot path, and an event is never changed once stamped.
    ``key`` travels in the frame header (the conflation key), not in the JSON body.
    """

    type: str
    source: str
    seq: int
    payload: dict[str, Any]
    id: str
    ts: int
    trace: str
    key: str = ""

    @classmethod
    def decode(cls, body: bytes | memoryview, key: str = "") -> Event:
        d = orjson.loads(body)
        return _new(cls, (d["type"], d["source"], d["seq"], d["payload"], d["id"], d["ts"], d["trace"], key))


_new = tuple.__new__  # NamedTuple's own __new__ is a Python function; this is the C one


def _encode(eid: str, ts: int, topic: str, source: str, seq: int, trace: str, payload: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {"id": eid, "ts": ts, "type": topic, "source": source, "seq": seq, "trace": trace, "payload": payload}
    )


class EventFactory:
    """Stamps events for one source: unique ids, per-source sequence numbers, trace ids."""

    __slots__ = ("_count", "_prefix", "_seq", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        # A per-process prefix keeps ids unique across restarts without a uuid per event.
        self._prefix = f"{source}-{os.urandom(4).hex()}-"
        self._count = 0
        # seq counts per (source, topic) so a subscriber that sees only some topics can still
        # tell a lost event from one it never subscribed to.
        self._seq: dict[str, int] = {}

    def stamp(self, topic: str, payload: dict[str, Any], trace: str | None = None, key: str = "") -> tuple[Event, bytes]:
        """The event and its encoded body, built from the same values in one pass."""
        self._count += 1
        seq = self._seq[topic] = self._seq.get(topic, 0) + 1
        eid = self._prefix + str(self._count)
        ts = time.time_ns()
        trace = trace or eid
        source = self.source
        return _new(Event, (topic, source, seq, payload, eid, ts, trace, key)), _encode(
            eid, ts, topic, source, seq, trace, payload
        )
