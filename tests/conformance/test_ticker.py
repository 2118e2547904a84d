"""Kite's recorded ticker packets: the emulator's encoder writes them byte for byte, the official
client decodes them as their JSON says, and the feed's decoder (daemons/marketdata/ticks.py)
decodes them as the client does."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kiteconnect import KiteTicker

from daemons.kite_emulator import datafiles
from daemons.kite_emulator.packets import Level, Tick, encode, message
from daemons.marketdata.instruments import load_instruments
from tests.conformance.conftest import Recorded
from tests.test_kite_feed import check_decodes_like_the_client

DECODER = KiteTicker("key", "token")
MODES = ["quote", "full"]


def recorded_tick(recorded: Recorded, mode: str) -> Tick:
    """ticker_*.json (gokiteconnect's names) as the emulator's Tick."""
    j: dict[str, Any] = recorded.json(f"ticker_{mode}.json")
    depth = j.get("depth", {"buy": [], "sell": []})
    return Tick(
        j["instrument_token"], j["last_price"], j["last_quantity"], j["average_price"], j["volume"],
        j["buy_quantity"], j["sell_quantity"], **j["ohlc"],
        last_trade_time=int(datetime.fromisoformat(j.get("last_trade_time", "1970-01-01T00:00:00+00:00")).timestamp()),
        oi=j.get("oi", 0), oi_day_high=j.get("oi_day_high", 0), oi_day_low=j.get("oi_day_low", 0),
        exchange_timestamp=int(datetime.fromisoformat(j.get("timestamp", "1970-01-01T00:00:00+00:00")).timestamp()),
        buy=tuple(Level(**lv) for lv in depth["buy"]), sell=tuple(Level(**lv) for lv in depth["sell"]),
    )


@pytest.mark.parametrize("mode", MODES)
def test_encoder_reproduces_the_recorded_packets_byte_for_byte(recorded: Recorded, mode: str) -> None:
    assert encode(recorded_tick(recorded, mode), mode) == recorded.packet(f"ticker_{mode}.packet")


@pytest.mark.parametrize("mode", MODES)
def test_client_decodes_the_recorded_packets_as_their_json_says(recorded: Recorded, mode: str) -> None:
    """The JSON uses gokiteconnect's names and an absolute change; map them to pykiteconnect's."""
    j = recorded.json(f"ticker_{mode}.json")
    (tick,) = DECODER._parse_binary(message([recorded.packet(f"ticker_{mode}.packet")]))
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


@pytest.mark.parametrize("mode", MODES)
def test_the_feeds_decoder_decodes_the_recorded_packets_as_the_client(recorded: Recorded, mode: str,
                                                                       tmp_path: Path) -> None:
    dump = tmp_path / "dump.csv"
    dump.write_text(datafiles.text("instruments.csv"))  # the emulator's own: it lists INFY, the packets' token
    (tick,) = check_decodes_like_the_client(message([recorded.packet(f"ticker_{mode}.packet")]),
                                            load_instruments(dump))
    assert tick["token"] == 408065 and tick["symbol"] == "INFY"
    if mode == "full":
        assert tick["bid"] < tick["ask"] and tick["bid_qty"] and tick["exchange_ts"] % 1_000_000_000 == 0
