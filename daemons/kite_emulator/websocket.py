"""The server side of RFC 6455, as much as Kite's ticker needs: handshake key, frames in and out.

Written on the stdlib rather than autobahn: see docs/KITE_EMULATOR.md (the client under test owns
Twisted's process-global reactor, and autobahn's asyncio flavour would flip txaio's global switch).
"""

from __future__ import annotations

import base64
import hashlib
import struct
from typing import Protocol

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
MAX_MESSAGE = 1 << 20  # client messages are small JSON commands; anything larger is an attack or a bug


class ProtocolError(Exception):
    """The peer broke RFC 6455; the connection is closed with 1002."""


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for the client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame (servers never mask)."""
    n = len(payload)
    if n < 126:
        header = struct.pack(">BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        header = struct.pack(">BBH", 0x80 | opcode, 126, n)
    else:
        header = struct.pack(">BBQ", 0x80 | opcode, 127, n)
    return header + payload


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack(">H", code) + reason.encode()[:123]


class Readable(Protocol):
    """What a frame is read from: a socket's buffered reader (http.server's rfile) or a file."""

    def read(self, size: int, /) -> bytes | None: ...


def _read_exact(stream: Readable, n: int) -> bytes:
    data = stream.read(n)
    if data is None or len(data) < n:
        raise EOFError("connection closed mid-frame")
    return data


def read_frame(stream: Readable) -> tuple[bool, int, bytes]:
    """(fin, opcode, unmasked payload) of the next frame; EOFError when the peer is gone."""
    b0, b1 = _read_exact(stream, 2)
    if b0 & 0x70:
        raise ProtocolError("reserved bits set without a negotiated extension")
    if not b1 & 0x80:
        raise ProtocolError("client frames must be masked")
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack(">H", _read_exact(stream, 2))
    elif n == 127:
        (n,) = struct.unpack(">Q", _read_exact(stream, 8))
    if n > MAX_MESSAGE:
        raise ProtocolError(f"frame of {n} bytes")
    mask = _read_exact(stream, 4)
    masked = _read_exact(stream, n)
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(masked))
    return bool(b0 & 0x80), b0 & 0x0F, payload
