"""The bus wire format: a 7-byte header the broker routes on, then body bytes it never parses.

    u32 length (of everything after these 4 bytes, big-endian)
    u8  kind     PUBLISH | SUBSCRIBE | UNSUBSCRIBE | HELLO | NOTICE | ACK
    u8  topic_len
    u8  key_len
    topic (ASCII)   key (bytes, e.g. an instrument token; the conflation key)   body

Routing on a small header and forwarding the body untouched is what keeps the broker hop
cheap (see bench/README.md): the JSON envelope is decoded only by the receiving client.

A SUBSCRIBE frame's topic is the pattern; its body, when not empty, is a key filter for a market-data
pattern: a JSON list of names, and the subscriber gets only the frames whose key has one of them as a
``|``-separated part (a tick's key is ``token|symbol|underlying``). An empty body means every key.
Subscribing the same pattern again replaces its filter.

A client whose HELLO body has ``"acks": true`` (the journal) sends ACK frames: the body is the decimal
count of order-path frames (every topic not of the market-data lane) it has received on this connection
and made durable. The broker keeps what it sent that is not acknowledged yet, and if the connection
ends (the process was killed with frames in its socket) hands it over again, first, to the next
connection of that name (daemons/bus/sessions.py): the client must ignore what it already has.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from typing import NamedTuple

import orjson

from .envelope import MARKET_DATA_MARKS

PUBLISH = 1
SUBSCRIBE = 2
UNSUBSCRIBE = 3
HELLO = 4
NOTICE = 5
ACK = 6
KINDS = frozenset({PUBLISH, SUBSCRIBE, UNSUBSCRIBE, HELLO, NOTICE, ACK})
# NOTICE topics the broker sends: a refused peer, and a broker about to stop (publishers hold what they
# publish from then on for the next broker, so nothing is written into a socket that will not be read).
FORBIDDEN = b"forbidden"
CLOSING = b"closing"
# The key of a HELLO from a client that is reconnecting (it was connected to a broker before): a new
# broker hands it the order path it missed meanwhile (daemons/bus/sessions.py, Arrivals).
AGAIN = b"again"

HEADER = struct.Struct("!IBBB")
HEADER_SIZE = HEADER.size  # 7
_MIN_LENGTH = HEADER_SIZE - 4

TOPIC_RE = re.compile(rb"^[a-z0-9_][a-z0-9_.\-]*$")
PATTERN_RE = re.compile(rb"^(\*|[a-z0-9_][a-z0-9_.\-]*(\.\*)?)$")


class ProtocolError(Exception):
    """A peer sent something that is not a valid frame; the broker drops that peer."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason  # low-cardinality, used as a metric label
        super().__init__(f"{reason}: {detail}")


class Frame(NamedTuple):
    kind: int
    topic: bytes
    key: bytes
    raw: bytes  # the whole frame, header included, to forward without re-encoding
    offset: int  # where the body starts in raw

    @property
    def body(self) -> bytes:
        return self.raw[self.offset :]


# One complete frame found by scan(): kind and offsets into the scanned buffer
# (start of frame, end of topic, end of key = start of body, end of frame).
Span = tuple[int, int, int, int, int]


def encode(kind: int, topic: bytes, body: bytes = b"", key: bytes = b"") -> bytes:
    return b"".join((HEADER.pack(3 + len(topic) + len(key) + len(body), kind, len(topic), len(key)), topic, key, body))


def scan(data: bytes, max_frame: int) -> tuple[list[Span], int]:
    """Every complete frame in ``data`` as offsets (no copies), and where the incomplete rest starts.

    The one place frames are validated; the broker and the clients slice what they need. One test per
    frame on the hot path; which rule a bad header broke is worked out only when one did.
    """
    spans: list[Span] = []
    append = spans.append
    pos = 0
    end = len(data)
    unpack = HEADER.unpack_from
    hs, least, kinds = HEADER_SIZE, _MIN_LENGTH, KINDS  # locals: read per frame
    limit = end - hs
    while pos <= limit:
        length, kind, tlen, klen = unpack(data, pos)
        if length > max_frame or tlen + klen > length - least or kind not in kinds:
            _bad_header(length, kind, tlen, klen, max_frame)
        stop = pos + 4 + length
        if stop > end:
            break
        t1 = pos + hs + tlen
        append((kind, pos, t1, t1 + klen, stop))
        pos = stop
    return spans, pos


def _bad_header(length: int, kind: int, tlen: int, klen: int, max_frame: int) -> None:
    if length > max_frame:
        raise ProtocolError("oversized", f"frame of {length} bytes exceeds the {max_frame}-byte limit")
    if length < _MIN_LENGTH or tlen + klen > length - _MIN_LENGTH:
        raise ProtocolError("malformed", f"inconsistent lengths (frame {length}, topic {tlen}, key {klen})")
    raise ProtocolError("malformed", f"unknown frame kind {kind}")


class Buffer:
    """Carries an incomplete frame over to the next read; a complete read passes through uncopied."""

    __slots__ = ("rest",)

    def __init__(self) -> None:
        self.rest = b""

    def join(self, data: bytes) -> bytes:
        if self.rest:
            data = self.rest + data
            self.rest = b""
        return data

    def keep(self, data: bytes, consumed: int) -> None:
        self.rest = data[consumed:] if consumed < len(data) else b""


class FrameReader:
    """Incremental parser returning Frame objects: for tools and tests, not the hot paths."""

    def __init__(self, max_frame: int) -> None:
        self._buffer = Buffer()
        self.max_frame = max_frame

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame still waiting for the rest (non-zero at EOF = truncated)."""
        return len(self._buffer.rest)

    def feed(self, data: bytes) -> list[Frame]:
        data = self._buffer.join(data)
        spans, consumed = scan(data, self.max_frame)
        self._buffer.keep(data, consumed)
        frames = []
        for kind, start, t1, k1, stop in spans:
            raw = data[start:stop]
            frames.append(Frame(kind, raw[HEADER_SIZE : t1 - start], raw[t1 - start : k1 - start], raw, k1 - start))
        return frames


def check_topic(topic: bytes) -> None:
    if not TOPIC_RE.match(topic):
        raise ProtocolError("malformed", f"bad topic {topic[:64]!r}")


def check_body(raw: bytes, offset: int) -> None:
    """Keeps garbage off the bus without parsing the JSON: the body must look like an object."""
    if offset >= len(raw) or raw[offset] != 0x7B or raw[-1] != 0x7D:  # '{' ... '}'
        raise ProtocolError("malformed", "body is not a JSON object")


def check_pattern(pattern: bytes) -> None:
    if not PATTERN_RE.match(pattern):
        raise ProtocolError("malformed", f"bad subscription pattern {pattern[:64]!r}")


KEY_SEPARATOR = b"|"  # between the parts of a key a filter can name (a tick: token|symbol|underlying)


def subscribe(pattern: str, names: Iterable[str] | None = None) -> bytes:
    """A SUBSCRIBE frame; ``names`` (None: every key) is the key filter, sorted so a resend is identical."""
    body = orjson.dumps(sorted(set(names))) if names is not None else b""
    return encode(SUBSCRIBE, pattern.encode(), body)


def ack(count: int) -> bytes:
    """An ACK frame: ``count`` order-path frames of this connection are durable at the client."""
    return encode(ACK, b"", str(count).encode())


def acked(body: bytes) -> int:
    """The count of an ACK frame; a bad one is the peer's protocol error."""
    if not body.isdigit() or len(body) > 18:
        raise ProtocolError("malformed", f"ACK body is not a count: {body[:24]!r}")
    return int(body)


def key_filter(pattern: bytes, body: bytes) -> frozenset[bytes] | None:
    """The names of a SUBSCRIBE frame's filter (None: every key); a bad one is the peer's protocol error."""
    if not body:
        return None
    if not pattern.startswith(MARKET_DATA_MARKS):  # the order path is never thinned
        raise ProtocolError("malformed", f"a key filter is for market data, not {pattern[:64]!r}")
    try:
        names = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ProtocolError("malformed", "key filter is not JSON") from None
    if not isinstance(names, list) or not all(isinstance(n, str) and n and "|" not in n for n in names):
        raise ProtocolError("malformed", "key filter is not a list of non-empty names without '|'")
    return frozenset(n.encode() for n in names)


def matches(pattern: str, topic: str) -> bool:
    """Exact topic, 'prefix.*' (anything below prefix), or '*' (everything)."""
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return topic.startswith(pattern[:-1])
    return pattern == topic
