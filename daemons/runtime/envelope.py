"""The event envelope every bus message carries, and the fleet's topics (docs/ARCHITECTURE.md, Envelope)."""

from __future__ import annotations

import os
import time
from typing import Annotated, Any

import msgspec
import orjson

# Topics are a contract with dashboards and other daemons: add, never rename.
MARKETDATA_TICK = "marketdata.tick"
MARKETDATA_OHLC = "marketdata.ohlc"  # a closed bar (daemons/features)
FEATURES_BAR = "features.bar"  # a symbol's features at a bar's close
FEATURES_SYNC = "features.sync"  # a consumer asks for recent history (payload: requester, symbols)
FEATURES_SNAPSHOT = "features.snapshot"  # the answer: a symbol's cached bars and features
STRATEGY_SIGNAL = "strategy.signal"
RISK_APPROVED = "risk.approved"
RISK_BLOCKED = "risk.blocked"
RISK_PNL = "risk.pnl"  # the fleet's P&L as risk books it, when it changes (at most once a second)
EXECUTION_ORDER = "execution.order"
EXECUTION_FILL = "execution.fill"
EXECUTION_REJECT = "execution.reject"
PORTFOLIO_ALLOCATION = "portfolio.allocation"  # a fill of a portfolios' net order shared out (daemons/risk/portfolios.py)
CONTROL_PAUSE = "control.pause"
CONTROL_RESUME = "control.resume"
CONTROL_KILL_SWITCH = "control.kill_switch"
CONTROL_SYNC = "control.sync"  # a restarted daemon asks for what it may have missed (see engine, execution)
CONTROL_COMMAND = "control.command"  # a control-plane command, to the unit hosting its strategy (algo-commander)
CONTROL_RESULT = "control.result"  # that unit's answer: executed, or failed with the reason
HEALTH_HEARTBEAT = "health.heartbeat"

# The market-data lane (docs/ARCHITECTURE.md, "The order path never waits behind market data"): ticks, bars
# and the features derived from them. Latest-value per key (a reader that falls behind gets the newest per
# key), filterable by key, never kept for a peer that comes back; every other topic is the order path. The
# one definition: the bus client and broker, the journal and the bridge all ask it.
MARKET_DATA_PREFIXES = ("marketdata.", "features.")
MARKET_DATA_MARKS = tuple(prefix.encode() for prefix in MARKET_DATA_PREFIXES)  # the same, for a frame's topic bytes


def is_market_data(topic: str) -> bool:
    """Whether a topic, or every topic of a pattern such as ``features.*``, is of the market-data lane."""
    return topic.startswith(MARKET_DATA_PREFIXES)


def tick_key(tick: dict[str, Any]) -> str:
    """A tick's frame key, ``token|symbol|underlying``: unique per instrument (the conflation key), and
    what a subscriber's key filter names (an engine asks only for its strategies' symbols and
    underlyings, so the broker never sends it the rest of a 9,000-instrument universe)."""
    return f"{tick.get('token', '')}|{tick['symbol']}|{tick.get('underlying') or ''}"


_INT64_MAX = 2**63 - 1  # what orjson and the journal can encode again


class Event(msgspec.Struct, frozen=True, gc=False):
    """type (the topic), source, seq (per source and topic), payload, id, ts (ns since epoch), trace.

    A frozen msgspec Struct: decoded straight from the JSON body with every field's type checked in C
    (``true`` is not an int, ``seq`` is at least 1), and never changed once stamped. ``gc=False``: an
    event holds no reference back to anything that holds it, so the cyclic GC need not track the
    thousands made per second. ``key`` travels in the frame header (the conflation key), not in the body.
    """

    type: str
    source: str
    seq: Annotated[int, msgspec.Meta(ge=1, le=_INT64_MAX)]
    payload: dict[str, Any]
    id: str
    ts: Annotated[int, msgspec.Meta(ge=0, le=_INT64_MAX)]
    trace: str
    key: str = ""

    @classmethod
    def decode(cls, body: bytes | memoryview, key: str = "") -> Event:
        """The event in ``body``; msgspec.DecodeError (ValidationError: a field missing or mistyped) if it is none."""
        event = decode_body(body)
        if key or event.key:  # the header's key, never one a body smuggled in
            set_key(event, "key", key)
        return event


decode_body = msgspec.json.Decoder(Event).decode  # msgspec's decoder: ~30% less than orjson.loads + checks
set_key = msgspec.structs.force_setattr
_time_ns = time.time_ns
_dumps = orjson.dumps  # the encoder: faster than msgspec's for this shape (bench/README.md)


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
        count = self._count = self._count + 1
        seqs = self._seq
        seq = seqs[topic] = seqs.get(topic, 0) + 1
        eid = self._prefix + str(count)
        ts = _time_ns()
        trace = trace or eid
        source = self.source
        body = _dumps({"id": eid, "ts": ts, "type": topic, "source": source, "seq": seq, "trace": trace, "payload": payload})
        return Event(topic, source, seq, payload, eid, ts, trace, key), body

    @property
    def stamped(self) -> dict[str, int]:
        """Events stamped so far, by topic (the last seq of each)."""
        return dict(self._seq)
