"""Deterministic client order ids: the same signal always maps to the same id.

The id is Kite's order ``tag`` in live mode (at most 20 alphanumeric characters), so after a
crash an order is found at the broker by the id we would have given it, never placed twice.
"""

from __future__ import annotations

import base64
import hashlib

LENGTH = 20


def client_id(signal_id: str) -> str:
    """20 characters of base32 (A-Z, 2-7) over a hash of the signal id: 100 bits, no collisions in practice."""
    digest = hashlib.blake2b(signal_id.encode(), digest_size=15).digest()
    return base64.b32encode(digest).decode()[:LENGTH]
