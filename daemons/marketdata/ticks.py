"""Kite ticker binary messages straight to the fleet's tick payloads, with ``struct``.

``KiteTicker._parse_binary`` slices every field out separately and builds Kite's nested dicts
(OHLC, ten depth levels, datetimes) that the fleet then throws away: 70-90 ms for a message of
3,000 full packets here, against 4-7 ms for ``decode``, payloads included (bench/ticker/README.md).
One precompiled ``Struct`` per packet length unpacks only the fields a tick payload carries,
skipping the rest as pad bytes, and a message of full packets only (the usual case: its size is a
run of full packets and every length field says 184) goes through ``iter_unpack`` in one call.

Layout (docs/KITE.md): ``>H`` packet count, then per packet ``>H`` length + bytes; the length is the
mode: 8 ltp, 44 quote, 184 full, 28/32 index quote/full. Prices are integers, divided by 100, or
by 1e7 for cds and 1e4 for bcd/nco (the segment is the token's low byte).

Malformed messages are split as ``_parse_binary`` splits them: each packet by its own length field,
a packet cut short by the message's end being what is left of it, its mode the size it has. A packet
the client turns into no tick (a size that is no mode) gives none here, and the packets around it
are kept; where the client raises and loses the whole message (a length field past the end, a packet
of under 4 bytes), the packets it would have accepted are kept too. Such packets are counted as
malformed. Equality with ``_parse_binary`` is tested in tests/test_kite_feed.py, fuzzed in
tests/test_ticks_fuzz.py, and checked on Kite's recorded packets in tests/conformance/test_ticker.py.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from .instruments import Instrument

SEGMENT_CDS = 3
SEGMENT_BCD = 6
SEGMENT_NCO = 12
NS = 1_000_000_000

_U16 = struct.Struct(">H")  # the packet count, and each packet's length
_LTP = struct.Struct(">II")  # token, last (also the head of an index quote)
_QUOTE = struct.Struct(">III4xI24x")  # token, last, last qty, (avg), volume, (buy/sell qty, ohlc)
_INDEX_FULL = struct.Struct(">II20xI")  # token, last, (ohlc, change), exchange ts
# A full packet with its length prefix (186 bytes): length, token, last, last qty, (avg), volume,
# (buy/sell qty, ohlc), last trade time, oi, (oi high/low), exchange ts, best bid qty, price,
# (orders, 4 more bids), best ask qty, price, (orders, 4 more asks).
_FULL_RECORD = struct.Struct(">HIII4xI24xII8xIII4x48xII4x48x")
FULL = 184
_MODES = frozenset((8, 28, 32, 44, FULL))  # the packet sizes the client decodes


class Meta(NamedTuple):
    """What a tick payload takes from the instruments dump, plus the token's price divisor."""

    symbol: str
    exchange: str
    type: str
    underlying: str
    strike: float
    expiry: str | None
    lot_size: int
    tick_size: float
    divisor: float

    @classmethod
    def of(cls, inst: Instrument) -> Meta:
        # Kite lists indices with lot and tick size 0; the simulator's defaults keep consumers' checks valid.
        return cls(inst.symbol, inst.exchange, inst.type, inst.name, inst.strike,
                   inst.expiry.isoformat() if inst.expiry else None, inst.lot_size or 1, inst.tick_size or 0.05,
                   divisor(inst.token))


def divisor(token: int) -> float:
    """Price scale by segment, as ``_parse_binary`` divides (floats, so results are identical)."""
    segment = token & 0xFF
    if segment == SEGMENT_CDS:
        return 10_000_000.0
    if segment in (SEGMENT_BCD, SEGMENT_NCO):
        return 10_000.0
    return 100.0


class Decoded(NamedTuple):
    """One message's tick payloads, and how many of its packets were malformed."""

    ticks: list[dict[str, Any]]
    malformed: int


def _full_only(message: bytes, count: int) -> bool:
    """The message is ``count`` full packets, each with its length field saying so (a length that
    lies would shift every later packet for ``_parse_binary``)."""
    return (len(message) == 2 + count * _FULL_RECORD.size
            and message[2::_FULL_RECORD.size].count(0) == count  # each length's high byte
            and message[3::_FULL_RECORD.size].count(FULL) == count)  # and its low byte


class _Split:
    """Every packet as a full packet's fields (size first; what a mode does not carry is 0), split
    by its own length as ``_parse_binary`` splits, one at a time (a list of them all would cost
    more). Once iterated, ``malformed`` counts a size that is no mode, a packet cut short, a length
    field past the end (the rest is lost: where it ends is unknown), bytes after the last packet."""

    def __init__(self, message: bytes, count: int) -> None:
        self.message, self.count, self.malformed = message, count, 0

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        message, length_at, full_at = self.message, _U16.unpack_from, _FULL_RECORD.unpack_from
        end, at, malformed = len(message), 2, 0
        last = end - 2  # the last offset a length field fits at
        for _ in range(self.count):
            if at > last:
                self.malformed = malformed + 1
                return
            (size,) = length_at(message, at)
            after = at + 2 + size
            if after > end:  # cut short: what is left is the packet, as the client slices it
                size = end - at - 2
                malformed += size in _MODES  # and decodes it by that size (a size that is no mode counts below)
            if size == FULL:
                yield full_at(message, at)
            elif size == 44:
                token, lp, ltq, vol = _QUOTE.unpack_from(message, at + 2)
                yield size, token, lp, ltq, vol, 0, 0, 0, 0, 0, 0, 0
            elif size == 32:
                token, lp, ets = _INDEX_FULL.unpack_from(message, at + 2)
                yield size, token, lp, 0, 0, 0, 0, ets, 0, 0, 0, 0
            elif size in (8, 28):  # ltp, index quote: the last price is all the fleet takes
                token, lp = _LTP.unpack_from(message, at + 2)
                yield size, token, lp, 0, 0, 0, 0, 0, 0, 0, 0, 0
            else:  # no mode: the client makes no tick of it (and raises under 4 bytes)
                malformed += 1
            at = after
        self.malformed = malformed + (at < end)


def decode(message: bytes, meta: Mapping[int, Meta], now_ns: int) -> Decoded:
    """The tick payloads of one binary message (heartbeats give none); never raises.

    ``exchange_ts`` (ns) is the packet's exchange time, else its last trade time, else ``now_ns``;
    bid/ask are the best depth level in full mode, else the last price with quantity 0 (so is an
    empty side of the book: never a price of 0). Tokens without metadata are left out (Kite may
    trail an unsubscribe).
    """
    if len(message) < 2:
        return Decoded([], 0)
    (count,) = _U16.unpack_from(message)
    records: Iterable[tuple[int, ...]]
    split = None
    if _full_only(message, count):  # one C loop
        records = _FULL_RECORD.iter_unpack(memoryview(message)[2:])
    else:
        records = split = _Split(message, count)
    out: list[dict[str, Any]] = []
    append, get = out.append, meta.get
    for _, token, lp, ltq, vol, ltt, oi, ets, bq, bp, sq, sp in records:
        m = get(token)
        if m is None:
            continue
        symbol, exchange, kind, underlying, strike, expiry, lot_size, tick_size, div = m
        last = lp / div
        append({
            "token": token, "symbol": symbol, "exchange": exchange, "last_price": last, "last_qty": ltq,
            "bid": bp / div if bp else last, "ask": sp / div if sp else last,
            "bid_qty": bq if bp else 0, "ask_qty": sq if sp else 0, "volume": vol, "oi": oi,
            "exchange_ts": ets * NS if ets else ltt * NS if ltt else now_ns,
            "type": kind, "underlying": underlying, "strike": strike, "expiry": expiry,
            "lot_size": lot_size, "tick_size": tick_size,
        })
    return Decoded(out, split.malformed if split is not None else 0)
