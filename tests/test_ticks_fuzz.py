"""``ticks.decode`` against the client's own ``KiteTicker._parse_binary`` on what a broken or hostile
sender can produce: lying length fields, truncated messages, wrong packet counts, garbage.

The decoder must yield exactly the ticks the client yields (compared field by field), never raise,
and count the malformed packets. Where the client raises and so loses a whole message (a length
field past the end, a packet under 4 bytes), the reference is the client's verdict on each packet it
split out before that point: the fleet keeps the valid packets. Seeded and bounded in count and time.
"""

from __future__ import annotations

import random
import struct
import time
from typing import Any

import pytest
from kiteconnect import KiteTicker

from daemons.kite_emulator.packets import MODES, Level, Tick, divisor, encode, message
from daemons.marketdata.instruments import Instrument
from daemons.marketdata.ticks import NS, Decoded, Meta, decode
from tests.test_kite_feed import expected

SEED = 20261204
MESSAGES = 4000
BUDGET_SEC = 40.0
NOW_NS = 1_763_449_999 * NS
CLIENT = KiteTicker("k", "t")
SIZES = (8, 28, 32, 44, 184)  # the packet sizes the client decodes (index quote/full: 28/32)
# One token per segment: NSE, NFO, CDS, BCD, NSE index, NCO, BSE index.
TOKENS = (408065, 13238786, 1412355, 1412614, 256265, 1412620, 265)
INFY = TOKENS[0]


def instrument(token: int) -> Instrument:
    return Instrument(token, f"T{token}", f"U{token}", 0.0, None, 0.0, 0.05, 1, "EQ", "NSE", "NSE")


# -- the reference: the client ------------------------------------------------------------------


def client_packets(msg: bytes) -> list[bytes]:
    """The packets the client splits out of ``msg``, up to a length field past the end (where its
    split raises): the largest packet count it splits without raising, found by bisection."""
    if len(msg) < 2:
        return []
    lo, hi = 0, struct.unpack_from(">H", msg)[0]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        try:
            CLIENT._split_packets(struct.pack(">H", mid) + msg[2:])
        except struct.error:
            hi = mid - 1
        else:
            lo = mid
    packets: list[bytes] = CLIENT._split_packets(struct.pack(">H", lo) + msg[2:])
    return packets


def client_alone(packet: bytes) -> list[dict[str, Any]]:
    """The client's ticks of one packet in a message of its own; under 4 bytes it raises: none."""
    try:
        ticks: list[dict[str, Any]] = CLIENT._parse_binary(message([packet]))
    except struct.error:
        return []
    return ticks


def client_ticks(msg: bytes) -> list[dict[str, Any]]:
    per_packet = [t for p in client_packets(msg) for t in client_alone(p)]
    try:
        whole: list[dict[str, Any]] = CLIENT._parse_binary(msg)
    except struct.error:
        return per_packet  # the client loses the whole message; the fleet keeps what it accepts packet by packet
    assert whole == per_packet  # where the client does not raise, the reference is the client itself
    return whole


def malformed(msg: bytes) -> int:
    """Packets the decoder must count as malformed: a size that is no mode or differs from the length
    field (cut short), a length field past the end (once), bytes after the last packet."""
    if len(msg) < 2:
        return 0
    packets, at, bad = client_packets(msg), 2, 0
    for packet in packets:
        (length,) = struct.unpack_from(">H", msg, at)
        bad += len(packet) not in SIZES or len(packet) != length
        at += 2 + length
    if len(packets) < struct.unpack_from(">H", msg)[0]:
        return bad + 1
    return bad + (at < len(msg))


def check(msg: bytes) -> Decoded:
    """``decode`` yields the client's ticks, field by field, with every token known (so no filtering
    hides a difference), and counts the malformed packets."""
    reference = client_ticks(msg)
    by_token = {t: instrument(t) for t in TOKENS} | {t["instrument_token"]: instrument(t["instrument_token"])
                                                     for t in reference}
    got = decode(msg, {t: Meta.of(i) for t, i in by_token.items()}, NOW_NS)
    assert got.ticks == [expected(t, by_token[t["instrument_token"]], NOW_NS) for t in reference], msg.hex()
    assert got.malformed == malformed(msg), msg.hex()
    return got


# -- messages -----------------------------------------------------------------------------------


def realistic(rng: random.Random, full: bool) -> bytes:
    """A packet the emulator's encoder writes, plausible values."""
    token = rng.choice(TOKENS)
    scale = divisor(token)

    def price() -> float:
        return rng.randrange(1, 10**7) / scale

    def levels() -> tuple[Level, ...]:
        return tuple(Level(rng.randrange(0, 10**5), price() if rng.random() < 0.9 else 0.0, rng.randrange(0, 50))
                     for _ in range(rng.randrange(0, 6)))

    tick = Tick(token, last_price=price(), last_traded_quantity=rng.randrange(0, 10**4),
                volume_traded=rng.randrange(0, 10**8), close=price(), oi=rng.randrange(0, 10**7),
                last_trade_time=rng.choice((0, 1_763_445_600 + rng.randrange(0, 30_000))),
                exchange_timestamp=rng.choice((0, 1_763_445_600 + rng.randrange(0, 30_000))),
                buy=levels(), sell=levels())
    return encode(tick, "full" if full else rng.choice(MODES))


def raw(rng: random.Random, full: bool) -> bytes:
    """A packet of a mode's size: a known token, then any bytes at all (times, prices, depth)."""
    size = 184 if full else rng.choice(SIZES)
    return struct.pack(">I", rng.choice(TOKENS))[:size] + rng.randbytes(size - 4)


def damaged(rng: random.Random) -> bytes:
    """A message of valid packets (all full ones a third of the time, the decoder's fast path), then
    up to three kinds of damage; one in eight messages is left intact, and one in six is full packets
    with only length fields lying (its size still a run of full packets)."""
    full = rng.random() < 0.35
    packets = [(realistic if rng.random() < 0.5 else raw)(rng, full) for _ in range(rng.randrange(0, 24))]
    msg = bytearray(message(packets))
    offsets = [2 + sum(2 + len(p) for p in packets[:k]) for k in range(len(packets))]
    only_lies = full and rng.random() < 0.5
    for _ in range(0 if rng.random() < 0.125 else rng.randrange(1, 4)):
        what = 0 if only_lies else rng.randrange(8)
        heads = [at for at in offsets if at + 2 <= len(msg)]  # where length fields were (before other damage)
        if what <= 1 and heads:  # a packet's length lies
            at = rng.choice(heads)
            (length,) = struct.unpack_from(">H", msg, at)
            lie = rng.choice((rng.randrange(0, 65536), rng.randrange(0, 4), rng.choice(SIZES),
                              max(0, length + rng.randrange(-12, 13))))
            struct.pack_into(">H", msg, at, lie)
        elif what == 2 and msg:  # cut short
            del msg[rng.randrange(len(msg)):]
        elif what == 3 and len(msg) >= 2:  # the packet count lies
            count = struct.unpack_from(">H", msg)[0]
            struct.pack_into(">H", msg, 0, rng.choice((rng.randrange(0, 65536), max(0, count + rng.randrange(-3, 4)))))
        elif what == 4:  # bytes after the last packet
            msg += rng.randbytes(rng.randrange(1, 200))
        elif what == 5:  # garbage inserted anywhere
            at = rng.randrange(len(msg) + 1)
            msg[at:at] = rng.randbytes(rng.randrange(1, 64))
        elif what == 6 and msg:  # flipped bits
            for _ in range(rng.randrange(1, 4)):
                msg[rng.randrange(len(msg))] ^= 1 << rng.randrange(8)
        elif what == 7:  # nothing but garbage
            msg = bytearray(rng.randbytes(rng.randrange(0, 600)))
    return bytes(msg)


# -- tests --------------------------------------------------------------------------------------


def test_a_lying_length_in_a_message_of_full_packets_is_no_tick() -> None:
    """The message's size is three full packets, but the second says it is 150 bytes: the client
    reads the third packet's length out of the second's depth and raises; only the first is a tick."""
    good = encode(Tick(INFY, last_price=1500.0, buy=(Level(5, 1499.95, 1),), sell=(Level(6, 1500.05, 1),)), "full")
    msg = bytearray(message([good] * 3))
    struct.pack_into(">H", msg, 2 + 186, 150)
    got = check(bytes(msg))
    assert [t["ask"] for t in got.ticks] == [1500.05] and got.malformed == 3  # the liar, its tail, the lost rest


def test_a_malformed_packet_keeps_the_valid_packets_around_it() -> None:
    ltp = encode(Tick(INFY, last_price=1500.0), "ltp")
    quote = encode(Tick(INFY, last_price=1501.0, volume_traded=9), "quote")
    for bad in (b"", b"\x00\x01", ltp + b"\x00", quote[:40]):  # under 4 bytes (the client raises), no mode
        got = check(message([ltp, bad, quote]))
        assert [t["last_price"] for t in got.ticks] == [1500.0, 1501.0] and got.malformed == 1
    cut = message([ltp, quote])[:-10]  # the last packet cut short: no mode left, no tick
    assert [t["last_price"] for t in check(cut).ticks] == [1500.0]
    past_the_end = bytearray(message([ltp, quote]))
    struct.pack_into(">H", past_the_end, 0, 5)  # three packets promised that are not there
    assert len(check(bytes(past_the_end)).ticks) == 2


def test_valid_messages_decode_as_the_client_with_nothing_malformed() -> None:
    rng = random.Random(SEED)
    for n in range(200):
        full = n % 2 == 0
        got = check(message([(realistic if rng.random() < 0.5 else raw)(rng, full) for _ in range(rng.randrange(40))]))
        assert got.malformed == 0


@pytest.mark.parametrize("seed", [SEED, SEED + 1])
def test_damaged_messages_decode_as_the_client_packet_by_packet(seed: int) -> None:
    rng = random.Random(seed)
    deadline = time.monotonic() + BUDGET_SEC / 2
    done, ticks, bad = 0, 0, 0
    while done < MESSAGES and time.monotonic() < deadline:
        got = check(damaged(rng))
        done, ticks, bad = done + 1, ticks + len(got.ticks), bad + got.malformed
    assert done >= MESSAGES // 4, f"only {done} messages within the time budget"
    assert ticks and bad  # the damage leaves both valid ticks and malformed packets to judge
