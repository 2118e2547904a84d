"""Kite ticker binary messages, encoded exactly as ``KiteTicker._parse_binary`` decodes them.

A message is ``>H`` packet count, then per packet ``>H`` length + bytes. The packet's length is its
mode: 8 ltp, 44 quote, 184 full; index tokens (segment 9) send 28 (quote) or 32 (full). Prices are
integers: price x divisor, where the divisor depends on the segment in the token's low byte.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

MODES = ("ltp", "quote", "full")
SEGMENT_CDS = 3
SEGMENT_BCD = 6
SEGMENT_INDICES = 9
SEGMENT_NCO = 12
DEPTH_LEVELS = 5
HEARTBEAT = b"\x00"  # the client treats any binary message of <= 4 bytes as a heartbeat


def divisor(token: int) -> int:
    """Price scale by segment: currency derivatives carry more decimals than equities."""
    segment = token & 0xFF
    if segment == SEGMENT_CDS:
        return 10_000_000
    if segment in (SEGMENT_BCD, SEGMENT_NCO):
        return 10_000
    return 100


@dataclass(frozen=True)
class Level:
    """One market-depth entry, as the client decodes it."""

    quantity: int = 0
    price: float = 0.0
    orders: int = 0


@dataclass
class Tick:
    """The emulator's state of one instrument: every field a full packet carries.

    Names follow pykiteconnect's decoded tick; times are epoch seconds (the wire format).
    """

    instrument_token: int
    last_price: float = 0.0
    last_traded_quantity: int = 0
    average_traded_price: float = 0.0
    volume_traded: int = 0
    total_buy_quantity: int = 0
    total_sell_quantity: int = 0
    open: float = 0.0
    high: float = 0.0
    low: float = 0.0
    close: float = 0.0
    last_trade_time: int = 0
    oi: int = 0
    oi_day_high: int = 0
    oi_day_low: int = 0
    exchange_timestamp: int = 0
    buy: tuple[Level, ...] = field(default_factory=tuple)
    sell: tuple[Level, ...] = field(default_factory=tuple)

    @property
    def is_index(self) -> bool:
        return self.instrument_token & 0xFF == SEGMENT_INDICES


def epoch(value: int | float | datetime) -> int:
    """Wire times are whole epoch seconds; tests may pass datetimes."""
    return int(value.timestamp()) if isinstance(value, datetime) else int(value)


def encode(tick: Tick, mode: str) -> bytes:
    """One packet of ``tick`` in ``mode`` (ltp, quote or full)."""
    if mode not in MODES:
        raise ValueError(f"unknown ticker mode {mode!r}")
    scale = divisor(tick.instrument_token)

    def price(value: float) -> int:
        return round(value * scale)

    head = struct.pack(">II", tick.instrument_token, price(tick.last_price))
    if mode == "ltp":
        return head
    if tick.is_index:
        # [24:28] is the price change, which the client recomputes from last and close and ignores.
        packet = head + struct.pack(
            ">IIIIi", price(tick.high), price(tick.low), price(tick.open), price(tick.close),
            price(tick.last_price - tick.close) if tick.close else 0,
        )
        return packet if mode == "quote" else packet + struct.pack(">I", tick.exchange_timestamp)
    packet = head + struct.pack(
        ">IIIIIIIII", tick.last_traded_quantity, price(tick.average_traded_price), tick.volume_traded,
        tick.total_buy_quantity, tick.total_sell_quantity, price(tick.open), price(tick.high), price(tick.low),
        price(tick.close),
    )
    if mode == "quote":
        return packet
    packet += struct.pack(
        ">IIIII", tick.last_trade_time, tick.oi, tick.oi_day_high, tick.oi_day_low, tick.exchange_timestamp
    )
    for side in (tick.buy, tick.sell):
        levels = (list(side) + [Level()] * DEPTH_LEVELS)[:DEPTH_LEVELS]
        packet += b"".join(struct.pack(">IIH2x", lv.quantity, price(lv.price), lv.orders) for lv in levels)
    return packet


def message(packets: Iterable[bytes]) -> bytes:
    """Frame packets into one binary WebSocket message."""
    items = list(packets)
    body = b"".join(struct.pack(">H", len(p)) + p for p in items)
    return struct.pack(">H", len(items)) + body
