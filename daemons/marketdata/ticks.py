"""Kite ticker binary messages straight to the fleet's tick payloads, with ``struct``.

``KiteTicker._parse_binary`` slices every field out separately and builds Kite's nested dicts
(OHLC, ten depth levels, datetimes) that the fleet then throws away: 70-90 ms for a message of
3,000 full packets here, against 4-7 ms for ``decode``, payloads included (bench/ticker/README.md).
One precompiled ``Struct`` per packet length unpacks only the fields a tick payload carries,
skipping the rest as pad bytes, and a message of full packets only (the usual case) goes through
``iter_unpack`` in one call.

Layout (docs/KITE.md): ``>H`` packet count, then per packet ``>H`` length + bytes; the length is the
mode: 8 ltp, 44 quote, 184 full, 28/32 index quote/full. Prices are integers, divided by 100, or
by 1e7 for cds and 1e4 for bcd/nco (the segment is the token's low byte). Equality with
``_parse_binary`` is tested in tests/test_kite_feed.py, on Kite's recorded packets in
tests/conformance/test_ticker.py.
"""

from __future__ import annotations

import struct
from typing import Any, Iterable, Iterator, Mapping, NamedTuple

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


def _records(message: bytes, count: int) -> Iterator[tuple[int, ...]]:
    """Every packet as a full packet's fields (length first); what a mode does not carry is 0."""
    at = 2
    for _ in range(count):
        (length,) = _U16.unpack_from(message, at)
        if length == 184:
            yield _FULL_RECORD.unpack_from(message, at)
        elif length == 44:
            token, lp, ltq, vol = _QUOTE.unpack_from(message, at + 2)
            yield length, token, lp, ltq, vol, 0, 0, 0, 0, 0, 0, 0
        elif length == 32:
            token, lp, ets = _INDEX_FULL.unpack_from(message, at + 2)
            yield length, token, lp, 0, 0, 0, 0, ets, 0, 0, 0, 0
        elif length in (8, 28):  # ltp, index quote: the last price is all the fleet takes
            token, lp = _LTP.unpack_from(message, at + 2)
            yield length, token, lp, 0, 0, 0, 0, 0, 0, 0, 0, 0
        at += 2 + length  # a length Kite may add later is skipped, as _parse_binary does


def decode(message: bytes, meta: Mapping[int, Meta], now_ns: int) -> list[dict[str, Any]]:
    """The tick payloads of one binary message (heartbeats give none).

    ``exchange_ts`` (ns) is the packet's exchange time, else its last trade time, else ``now_ns``;
    bid/ask are the best depth level in full mode, else the last price with quantity 0 (so is an
    empty side of the book: never a price of 0). Tokens without metadata are left out (Kite may
    trail an unsubscribe).
    """
    if len(message) < 2:
        return []
    (count,) = _U16.unpack_from(message)
    records: Iterable[tuple[int, ...]]
    if len(message) == 2 + count * _FULL_RECORD.size:  # full packets only (184 is the longest): one C loop
        records = _FULL_RECORD.iter_unpack(memoryview(message)[2:])
    else:
        records = _records(message, count)
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
    return out
