"""The encoder against Zerodha's recorded packets and the official client's decoder."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

import pytest
from kiteconnect import KiteTicker

from daemons.kite_emulator.fixtures import Fixtures
from daemons.kite_emulator.packets import HEARTBEAT, Level, Tick, encode, message

FIXTURES = Fixtures()
DECODER = KiteTicker("key", "token")


def recorded_packet(name: str) -> bytes:
    return base64.b64decode(FIXTURES.path(name).read_text())


def recorded_tick(name: str) -> Tick:
    """ticker_*.json (gokiteconnect's names) as the emulator's Tick."""
    j: dict[str, Any] = json.loads(FIXTURES.path(name).read_text())
    depth = j.get("depth", {"buy": [], "sell": []})
    return Tick(
        j["instrument_token"], j["last_price"], j["last_quantity"], j["average_price"], j["volume"],
        j["buy_quantity"], j["sell_quantity"], **j["ohlc"],
        last_trade_time=int(datetime.fromisoformat(j.get("last_trade_time", "1970-01-01T00:00:00+00:00")).timestamp()),
        oi=j.get("oi", 0), oi_day_high=j.get("oi_day_high", 0), oi_day_low=j.get("oi_day_low", 0),
        exchange_timestamp=int(datetime.fromisoformat(j.get("timestamp", "1970-01-01T00:00:00+00:00")).timestamp()),
        buy=tuple(Level(**lv) for lv in depth["buy"]), sell=tuple(Level(**lv) for lv in depth["sell"]),
    )


@pytest.mark.parametrize("mode", ["quote", "full"])
def test_encoder_reproduces_the_recorded_packets_byte_for_byte(mode: str) -> None:
    assert encode(recorded_tick(f"ticker_{mode}.json"), mode) == recorded_packet(f"ticker_{mode}.packet")


@pytest.mark.parametrize("mode", ["quote", "full"])
def test_client_decodes_the_recorded_packets_as_the_fixture_json_says(mode: str) -> None:
    """The fixture JSON uses gokiteconnect's names and an absolute change; map them to pykiteconnect's."""
    j = json.loads(FIXTURES.path(f"ticker_{mode}.json").read_text())
    (tick,) = DECODER._parse_binary(message([recorded_packet(f"ticker_{mode}.packet")]))
    assert tick["mode"] == mode and tick["tradable"] is True
    assert tick["instrument_token"] == j["instrument_token"]
    for ours, theirs in [("last_price", "last_price"), ("last_traded_quantity", "last_quantity"),
                         ("average_traded_price", "average_price"), ("volume_traded", "volume"),
                         ("total_buy_quantity", "buy_quantity"), ("total_sell_quantity", "sell_quantity"),
                         ("ohlc", "ohlc")]:
        assert tick[ours] == j[theirs], ours
    # pykiteconnect's change is a percentage (ticker_quote.json's absolute change is the full tick's).
    assert tick["change"] == pytest.approx((j["last_price"] - j["ohlc"]["close"]) * 100 / j["ohlc"]["close"])
    if mode == "full":
        assert tick["exchange_timestamp"] == datetime.fromisoformat(j["timestamp"]).astimezone().replace(tzinfo=None)
        assert tick["depth"] == j["depth"]


def test_ltp_packet() -> None:
    (tick,) = DECODER._parse_binary(message([encode(Tick(408065, last_price=1573.15), "ltp")]))
    assert tick == {"tradable": True, "mode": "ltp", "instrument_token": 408065, "last_price": 1573.15}


@pytest.mark.parametrize(("mode", "size"), [("quote", 28), ("full", 32)])
def test_index_packets_are_short_and_not_tradable(mode: str, size: int) -> None:
    nifty = Tick(256265, last_price=24010.5, open=23900.0, high=24050.25, low=23890.0, close=24000.0,
                 exchange_timestamp=1_700_000_000)
    packet = encode(nifty, mode)
    assert len(packet) == size
    (tick,) = DECODER._parse_binary(message([packet]))
    assert tick["tradable"] is False and tick["mode"] == mode
    assert tick["ohlc"] == {"open": 23900.0, "high": 24050.25, "low": 23890.0, "close": 24000.0}
    assert tick["change"] == pytest.approx(10.5 * 100 / 24000.0)
    assert ("exchange_timestamp" in tick) == (mode == "full")


def test_currency_prices_use_their_segment_divisor() -> None:
    usdinr = Tick(412675, last_price=83.1234)  # segment 3 (CDS): prices scaled by 1e7
    assert encode(usdinr, "ltp")[4:] == (831_234_000).to_bytes(4, "big")
    (tick,) = DECODER._parse_binary(message([encode(usdinr, "ltp")]))
    assert tick["last_price"] == 83.1234


def test_several_packets_in_one_message_and_the_heartbeat() -> None:
    ticks = DECODER._parse_binary(message([encode(Tick(408065, last_price=1.5), "ltp"),
                                           encode(Tick(779521, last_price=2.5), "quote")]))
    assert [(t["instrument_token"], t["mode"]) for t in ticks] == [(408065, "ltp"), (779521, "quote")]
    assert len(HEARTBEAT) <= 4  # what the client skips instead of parsing


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown ticker mode"):
        encode(Tick(408065), "snapshot")
