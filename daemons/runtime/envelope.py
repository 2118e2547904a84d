"""The event envelope every bus message carries, and the fleet's topics (DESIGN.md)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

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
HEALTH_HEARTBEAT = "health.heartbeat"

# Topics under this prefix are latest-value: a slow subscriber gets the newest tick per key.
CONFLATED_PREFIX = "marketdata."


@dataclass(slots=True)
class Event:
    """id, ts (ns since epoch), type (the topic), source, seq (per source and topic), trace, payload."""

    type: str
    source: str
    seq: int
    payload: dict[str, Any]
    id: str
    ts: int
    trace: str
    key: str = field(default="", compare=False)

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "id": self.id,
                "ts": self.ts,
                "type": self.type,
                "source": self.source,
                "seq": self.seq,
                "trace": self.trace,
                "payload": self.payload,
            }
        )

    @classmethod
    def decode(cls, body: bytes, key: str = "") -> "Event":
        d = orjson.loads(body)
        return cls(d["type"], d["source"], d["seq"], d["payload"], d["id"], d["ts"], d["trace"], key)


class EventFactory:
    """Stamps events for one source: unique ids, per-source sequence numbers, trace ids."""

    __slots__ = ("source", "_prefix", "_count", "_seq")

    def __init__(self, source: str) -> None:
        self.source = source
        # A per-process prefix keeps ids unique across restarts without a uuid per event.
        self._prefix = f"{source}-{os.urandom(4).hex()}-"
        self._count = 0
        # seq counts per (source, topic) so a subscriber that sees only some topics can still
        # tell a lost event from one it never subscribed to.
        self._seq: dict[str, int] = {}

    def make(self, topic: str, payload: dict[str, Any], trace: str | None = None, key: str = "") -> Event:
        self._count += 1
        seq = self._seq[topic] = self._seq.get(topic, 0) + 1
        eid = self._prefix + str(self._count)
        return Event(topic, self.source, seq, payload, eid, time.time_ns(), trace or eid, key)
