"""How bus events sit in Redis: one stream per topic family, one entry per event, the body untouched.

A topic's family is its first dotted part (``execution.fill`` -> ``execution``), and its stream is
``<stream_prefix>bus:<family>``. Per family rather than per topic, because order matters across the
topics of one family (an order's ``execution.order`` before its ``execution.fill``, as one broker
connection delivers them on one host) and Redis orders entries only within a stream; per family
rather than one stream for all, because market data must be trimmed hard (MAXLEN ~) and read without
acknowledgement, while the order path must not: ``marketdata`` is a family of its own.

An entry's fields: ``t`` topic, ``k`` frame key, ``h`` the exporting host, ``b`` the envelope as the
publisher encoded it (id, source, seq, trace: so per-source gap detection and dedup by id work across
hosts as on one). The bridge reads only ``id``, ``source`` and ``ts`` of a body, to route and to dedup.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from ..runtime import wire
from ..runtime.envelope import is_market_data

MARKETDATA = "marketdata"  # the family of the whole market-data lane: trimmed by MAXLEN, read without a group


class Head(msgspec.Struct, frozen=True, gc=False):
    """The envelope fields the bridge routes and deduplicates on (the rest is skipped unparsed)."""

    id: str
    source: str
    type: str
    ts: int


decode_head = msgspec.json.Decoder(Head).decode


class Entry(NamedTuple):
    """One stream entry, checked: what to publish on the local bus and what identifies it."""

    topic: str
    key: bytes
    host: str
    body: bytes
    head: Head


class Malformed(Exception):
    """A stream entry the bridge cannot publish; ``reason`` is low-cardinality (a log's rate-limit key)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def family(pattern: str) -> str:
    """The family of a topic or a ``prefix.*`` pattern: its first dotted part, but every topic of the bus's
    market-data lane (ticks, bars, features: ``envelope.is_market_data``) is of ``marketdata``."""
    return MARKETDATA if is_market_data(pattern) else pattern.split(".", 1)[0]


def stream(prefix: str, fam: str) -> str:
    return f"{prefix}bus:{fam}"


def fields(topic: bytes, key: bytes, host: bytes, body: bytes) -> dict[bytes, bytes]:
    return {b"t": topic, b"k": key, b"h": host, b"b": body}


def parse(fam: str, raw: dict[bytes, bytes] | None) -> Entry:
    """The entry's fields as the bridge wrote them, or Malformed (anyone with the ACL user can XADD)."""
    if not raw:
        raise Malformed("trimmed")  # MAXLEN removed it while it was pending: XREADGROUP returns no fields
    try:
        topic_b, key, host_b, body = raw[b"t"], raw[b"k"], raw[b"h"], raw[b"b"]
    except (KeyError, TypeError):
        raise Malformed("missing field") from None
    try:
        wire.check_topic(topic_b)
        wire.check_body(body, 0)
    except wire.ProtocolError:
        raise Malformed("bad topic or body") from None
    topic = topic_b.decode()
    if family(topic) != fam or len(key) > 255 or len(topic_b) > 255:
        raise Malformed("topic not of this stream's family")
    try:
        head = decode_head(body)
        host = host_b.decode()
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise Malformed("body is not an envelope") from None
    if head.type != topic:
        raise Malformed("type is not the entry's topic")
    return Entry(topic, key, host, body, head)
