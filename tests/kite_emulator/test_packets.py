"""The encoder against the official client's decoder (tests/conformance/ adds Kite's recorded packets)."""

from __future__ import annotations

from datetime import datetime

import pytest
from kiteconnect import KiteTicker

from daemons.kite_emulator.packets import HEARTBEAT, Level, Tick, encode, message

DECODER = KiteTicker("key", "token")
FULL = Tick(408065, last_price=1512.3, last_traded_quantity=12, average_traded_price=1508.74, volume_traded=6240133,
            total_buy_quantity=412560, total_sell_quantity=398211, open=1500.0, high=1518.9, low=1496.2,
            close=1498.65, last_trade_time=1_767_607_198, oi=0, oi_day_high=0, oi_day_low=0,
            exchange_timestamp=1_767_607_199,
            buy=(Level(40, 1512.25, 1), Level(75, 1512.2, 2)), sell=(Level(25, 1512.3, 1),))


@pytest.mark.parametrize(("mode", "size"), [("quote", 44), ("full", 184)])
def test_client_decodes_quote_and_full_packets_to_what_was_encoded(mode: str, size: int) -> None:
    packet = encode(FULL, mode)
    assert len(packet) == size
    (tick,) = DECODER._parse_binary(message([packet]))
    assert tick["mode"] == mode and tick["tradable"] is True and tick["instrument_token"] == 408065
    for name in ("last_price", "last_traded_quantity", "average_traded_price", "volume_traded",
                 "total_buy_quantity", "total_sell_quantity"):
        assert tick[name] == getattr(FULL, name), name
    assert tick["ohlc"] == {"open": 1500.0, "high": 1518.9, "low": 1496.2, "close": 1498.65}
    assert tick["change"] == pytest.approx((1512.3 - 1498.65) * 100 / 1498.65)  # a percentage, as the client has it
    if mode == "full":
        assert tick["exchange_timestamp"] == datetime.fromtimestamp(1_767_607_199)
        assert tick["last_trade_time"] == datetime.fromtimestamp(1_767_607_198)
        assert tick["depth"]["buy"][:2] == [{"quantity": 40, "price": 1512.25, "orders": 1},
                                            {"quantity": 75, "price": 1512.2, "orders": 2}]
        assert tick["depth"]["sell"] == [{"quantity": 25, "price": 1512.3, "orders": 1}] + [
            {"quantity": 0, "price": 0.0, "orders": 0}] * 4


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
