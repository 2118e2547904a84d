"""The real KiteConnect client against the emulator's REST routes and order book."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import pytest
import requests
from kiteconnect import KiteConnect
from kiteconnect.exceptions import GeneralException, InputException, TokenException

from daemons.kite_emulator import Emulator, datafiles


def place(kite: KiteConnect, quantity: int = 10, side: str = "BUY", order_type: str = "MARKET",
          **kwargs: Any) -> str:
    return kite.place_order("regular", "NSE", "INFY", side, quantity, "MIS", order_type, **kwargs)


def order(kite: KiteConnect, order_id: str) -> dict[str, Any]:
    (found,) = [o for o in kite.orders() if o["order_id"] == order_id]
    return found


def test_static_routes_serve_the_emulators_own_data(kite: KiteConnect) -> None:
    assert kite.profile() == datafiles.load("profile.json")
    margins = datafiles.load("margins.json")
    assert kite.margins() == margins
    assert kite.margins("equity") == margins["equity"] and kite.margins("commodity") == margins["commodity"]
    assert kite.holdings() == datafiles.load("holdings.json")
    with pytest.raises(InputException):
        kite.margins("crypto")


def test_order_margins_are_the_emulators_model_and_a_bad_request_is_an_input_error(
        emulator: Emulator, kite: KiteConnect) -> None:
    emulator.set_price("NSE:INFY", 1500.0)
    order = {"exchange": "NSE", "tradingsymbol": "INFY", "transaction_type": "BUY", "variety": "regular",
             "product": "MIS", "order_type": "MARKET", "quantity": 10, "price": 0, "trigger_price": 0}
    (margin,) = kite.order_margins([order])
    assert (margin["tradingsymbol"], margin["total"]) == ("INFY", 3000.0)  # 20% of 10 x the last price
    assert kite.order_margins([{**order, "order_type": "LIMIT", "price": 1000.0}])[0]["total"] == 2000.0
    with pytest.raises(InputException, match="tradingsymbol"):
        kite.order_margins([{**order, "tradingsymbol": "NOSUCH"}])
    with pytest.raises(InputException, match="JSON list"):
        kite.order_margins({"not": "a list"})  # type: ignore[arg-type]


def test_instruments_dump_is_the_shipped_one_plus_added_instruments(emulator: Emulator, kite: KiteConnect) -> None:
    expected = kite._parse_instruments(datafiles.text("instruments.csv").encode())
    assert kite.instruments() == expected
    assert {(r["exchange"], r["segment"], r["instrument_type"]) for r in expected} >= {
        ("NSE", "NSE", "EQ"), ("BSE", "BSE", "EQ"), ("NSE", "INDICES", "EQ"), ("NFO", "NFO-FUT", "FUT"),
        ("NFO", "NFO-OPT", "CE"), ("NFO", "NFO-OPT", "PE")}
    assert min(r["expiry"] for r in expected if r["expiry"]).year == 2099  # nothing in it expires by date
    emulator.add_instrument("NSE", "NEWCO", 9_999_873, name="NEW COMPANY")
    dump = kite.instruments()
    assert dump[:-1] == expected
    assert dump[-1]["tradingsymbol"] == "NEWCO" and dump[-1]["instrument_token"] == 9_999_873
    assert kite.instruments("NFO") == [row for row in expected if row["exchange"] == "NFO"]


def test_instruments_are_gzipped_like_kites(emulator: Emulator) -> None:
    r = requests.get(emulator.root + "/instruments", timeout=5)
    assert r.headers["Content-Encoding"] == "gzip" and "csv" in r.headers["Content-Type"]
    assert r.text.startswith("instrument_token,exchange_token,tradingsymbol,")


def test_quotes_come_from_the_shipped_ones_until_the_emulator_has_a_price(emulator: Emulator,
                                                                         kite: KiteConnect) -> None:
    shipped = datafiles.load("quotes.json")["NSE:INFY"]
    assert kite.ltp("NSE:INFY", "NSE:NOSUCH", "NSE:TCS") == {  # TCS is listed but has no price or quote
        "NSE:INFY": {"instrument_token": 408065, "last_price": shipped["last_price"]}}
    assert kite.ohlc("NSE:INFY")["NSE:INFY"]["ohlc"] == shipped["ohlc"]
    assert kite.quote("NSE:INFY")["NSE:INFY"]["depth"] == shipped["depth"]
    emulator.push_tick(408065, last_price=1500.0, close=1480.0, volume_traded=1234,
                       depth={"buy": [{"price": 1499.95, "quantity": 10, "orders": 2}], "sell": []})
    assert kite.ltp("NSE:INFY") == {"NSE:INFY": {"instrument_token": 408065, "last_price": 1500.0}}
    quote = kite.quote(["NSE:INFY"])["NSE:INFY"]
    assert quote["volume"] == 1234 and quote["net_change"] == 20.0
    assert quote["ohlc"] == {"open": 1500.0, "high": 1500.0, "low": 1500.0, "close": 1480.0}
    assert quote["depth"]["buy"][0] == {"price": 1499.95, "quantity": 10, "orders": 2}
    assert isinstance(quote["timestamp"], datetime)  # a 19-character timestamp the client parses


def test_historical_candles(kite: KiteConnect) -> None:
    candles = kite.historical_data(256265, datetime(2026, 1, 5, 9, 15), datetime(2026, 1, 5, 15, 30), "minute")
    assert candles[0]["open"] == 24120.0 and isinstance(candles[0]["date"], datetime)
    assert "oi" not in candles[0]
    with_oi = kite.historical_data(256265, "2026-01-05 09:15:00", "2026-01-05 15:30:00", "minute", oi=True)
    assert [{k: v for k, v in c.items() if k != "oi"} for c in with_oi] == candles and with_oi[0]["oi"] > 0
    with pytest.raises(InputException):
        kite.historical_data(408065, "yesterday", "today", "minute")


def test_wrong_token_and_unknown_route(emulator: Emulator) -> None:
    stranger = KiteConnect(emulator.api_key, "not-a-token", root=emulator.root)
    with pytest.raises(TokenException) as err:
        stranger.profile()
    assert err.value.code == 403
    with pytest.raises(GeneralException) as unknown:
        stranger._get("gtt")  # a route the emulator does not serve
    assert unknown.value.code == 404


def test_generate_session_checks_the_checksum_and_issues_a_token(emulator: Emulator) -> None:
    client = KiteConnect(emulator.api_key, root=emulator.root)
    with pytest.raises(TokenException, match="checksum"):
        client.generate_session("request-1", "wrong secret")
    session = client.generate_session("request-1", emulator.api_secret)
    assert session["access_token"] == client.access_token != emulator.access_token
    assert isinstance(session["login_time"], datetime) and session["user_id"] == "AB1234"
    assert client.profile()["user_id"] == "AB1234"
    with pytest.raises(TokenException):  # a request token is good once
        KiteConnect(emulator.api_key, root=emulator.root).generate_session("request-1", emulator.api_secret)
    assert client.invalidate_access_token() is True
    with pytest.raises(TokenException):
        client.profile()


def test_market_order_fills_at_the_emulator_price(emulator: Emulator, kite: KiteConnect) -> None:
    emulator.set_price("NSE:INFY", 1500.0)
    order_id = place(kite, tag="ENTRY1")
    o = order(kite, order_id)
    assert (o["status"], o["filled_quantity"], o["pending_quantity"], o["average_price"]) == ("COMPLETE", 10, 0, 1500.0)
    assert o["tag"] == "ENTRY1" and o["tags"] == ["ENTRY1"] and len(order_id) == 15
    assert isinstance(o["order_timestamp"], datetime)
    assert [h["status"] for h in kite.order_history(order_id)] == [
        "PUT ORDER REQ RECEIVED", "VALIDATION PENDING", "OPEN PENDING", "OPEN", "COMPLETE"]
    (trade,) = kite.order_trades(order_id)
    assert (trade["quantity"], trade["average_price"], trade["transaction_type"]) == (10, 1500.0, "BUY")


def test_partial_fill_then_complete_with_positions(emulator: Emulator, kite: KiteConnect) -> None:
    emulator.set_price("NSE:INFY", 1500.0)
    emulator.add_rule(tag="PARTIAL", slices=[4])
    order_id = place(kite, tag="PARTIAL")
    o = order(kite, order_id)
    assert (o["status"], o["filled_quantity"], o["pending_quantity"]) == ("OPEN", 4, 6)
    emulator.set_price("NSE:INFY", 1501.0)  # the next matching pass fills the rest
    o = order(kite, order_id)
    assert (o["status"], o["filled_quantity"], o["average_price"]) == ("COMPLETE", 10, 1500.6)
    assert [(t["quantity"], t["average_price"]) for t in kite.order_trades(order_id)] == [(4, 1500.0), (6, 1501.0)]
    positions = kite.positions()
    (net,) = positions["net"]
    assert (net["quantity"], net["buy_quantity"], net["average_price"], net["last_price"]) == (10, 10, 1500.6, 1501.0)
    assert net["pnl"] == pytest.approx(10 * 1501.0 - (4 * 1500.0 + 6 * 1501.0))
    assert positions["day"] == positions["net"]
    sell = place(kite, side="SELL", quantity=10)
    assert order(kite, sell)["status"] == "COMPLETE"
    (net,) = kite.positions()["net"]
    assert (net["quantity"], net["average_price"]) == (0, 0.0)
    assert net["realised"] == pytest.approx(10 * (1501.0 - 1500.6)) and net["unrealised"] == pytest.approx(0)


def test_rejection_by_rule_and_by_switch(emulator: Emulator, kite: KiteConnect) -> None:
    emulator.set_price("NSE:INFY", 1500.0)
    emulator.add_rule(instrument="NSE:INFY", reject="RMS:Margin Exceeds", times=1)
    order_id = place(kite)
    o = order(kite, order_id)
    assert (o["status"], o["status_message"], o["exchange_order_id"], o["pending_quantity"]) == (
        "REJECTED", "RMS:Margin Exceeds", None, 0)
    assert kite.trades() == [] and kite.positions()["net"] == []
    assert order(kite, place(kite))["status"] == "COMPLETE"  # the rule applied once
    emulator.add_rule(reject="Kill switch")  # no matcher: every order
    assert order(kite, place(kite))["status"] == "REJECTED"
    emulator.clear_rules()
    assert order(kite, place(kite))["status"] == "COMPLETE"


def test_market_order_without_a_price_is_rejected(kite: KiteConnect) -> None:
    o = order(kite, place(kite))
    assert o["status"] == "REJECTED" and "no price" in o["status_message"]


def test_limit_order_rests_then_modify_then_cancel(emulator: Emulator, kite: KiteConnect) -> None:
    emulator.set_price("NSE:INFY", 1500.0)
    order_id = place(kite, order_type="LIMIT", price=1490.0)
    assert order(kite, order_id)["status"] == "OPEN"
    assert kite.modify_order("regular", order_id, quantity=20, price=1495.5) == order_id
    o = order(kite, order_id)
    assert (o["quantity"], o["price"], o["modified"], o["pending_quantity"]) == (20, 1495.5, True, 20)
    assert kite.cancel_order("regular", order_id) == order_id
    o = order(kite, order_id)
    # As Kite reports it: a cancelled order keeps its pending quantity and counts it cancelled.
    assert (o["status"], o["cancelled_quantity"], o["pending_quantity"]) == ("CANCELLED", 20, 20)
    assert [h["status"] for h in kite.order_history(order_id)][4:] == [
        "MODIFY VALIDATION PENDING", "MODIFY PENDING", "MODIFIED", "OPEN", "CANCEL PENDING", "CANCELLED"]
    with pytest.raises(InputException, match="CANCELLED"):
        kite.cancel_order("regular", order_id)
    with pytest.raises(InputException, match="order_id"):
        kite.order_history("999")


def test_limit_order_fills_when_the_price_crosses_and_ioc_cancels_the_rest(emulator: Emulator,
                                                                          kite: KiteConnect) -> None:
    emulator.set_price("NSE:INFY", 1500.0)
    order_id = place(kite, side="SELL", order_type="LIMIT", price=1505.0)
    emulator.set_price("NSE:INFY", 1504.95)
    assert order(kite, order_id)["status"] == "OPEN"
    emulator.set_price("NSE:INFY", 1506.0)
    o = order(kite, order_id)
    assert (o["status"], o["average_price"]) == ("COMPLETE", 1506.0)  # at the market, better than the limit
    emulator.add_rule(tag="IOC1", slices=[3])
    ioc = order(kite, place(kite, validity="IOC", tag="IOC1"))
    assert (ioc["status"], ioc["filled_quantity"], ioc["cancelled_quantity"]) == ("CANCELLED", 3, 7)


def test_market_protection_books_a_limit_at_the_band(emulator: Emulator, kite: KiteConnect) -> None:
    """Kite books MARKET + market_protection as a LIMIT tagged mktp (docs/KITE.md)."""
    emulator.set_price("NSE:INFY", 1500.0)
    emulator.add_rule(tag="MKTP", slices=[5])
    o = order(kite, place(kite, market_protection=2, tag="MKTP"))
    assert (o["order_type"], o["price"], o["tags"]) == ("LIMIT", 1530.0, ["MKTP", "mktp", "mktp:2.00"])
    assert o["filled_quantity"] == 5
    emulator.set_price("NSE:INFY", 1540.0)  # beyond the band: the rest waits
    assert order(kite, o["order_id"])["filled_quantity"] == 5
    o = order(kite, place(kite, side="SELL", market_protection=-1))  # automatic: the emulator's 2 %
    assert (o["price"], o["status"]) == (1509.2, "COMPLETE")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tag": "way-too-long-for-kite-tags"}, "tag"),
    ({"tag": "has-dash"}, "tag"),
    ({"order_type": "LIMIT", "price": 1500.03}, "tick size"),
    ({"order_type": "LIMIT"}, "price"),
    ({"order_type": "SL"}, "order_type"),
    ({"market_protection": 101}, "market_protection"),
    ({"validity": "TTL"}, "validity"),
    ({"quantity": 0}, "quantity"),
])
def test_invalid_orders_raise_input_exception(emulator: Emulator, kite: KiteConnect, kwargs: dict[str, Any],
                                              message: str) -> None:
    emulator.set_price("NSE:INFY", 1500.0)
    with pytest.raises(InputException, match=message) as err:
        place(kite, **kwargs)
    assert err.value.code == 400
    assert kite.orders() == []


def test_unknown_instrument_variety_and_lot_size(emulator: Emulator, kite: KiteConnect) -> None:
    with pytest.raises(InputException, match="instruments list"):
        kite.place_order("regular", "NSE", "NOSUCH", "BUY", 1, "CNC", "MARKET")
    with pytest.raises(InputException, match="variety"):
        kite.place_order("amo", "NSE", "INFY", "BUY", 1, "CNC", "MARKET")
    with pytest.raises(InputException, match="lot size 35"):  # BANKNIFTY options trade in lots of 35
        kite.place_order("regular", "NFO", "BANKNIFTY99DEC52000CE", "BUY", 30, "NRML", "LIMIT", price=528.4)


def test_checksum_is_kites_formula(emulator: Emulator) -> None:
    """generate_session computes it client-side; the emulator must agree with Kite's formula (docs/KITE.md)."""
    checksum = hashlib.sha256((emulator.api_key + "rt" + emulator.api_secret).encode()).hexdigest()
    r = requests.post(emulator.root + "/session/token", timeout=5,
                      data={"api_key": emulator.api_key, "request_token": "rt", "checksum": checksum})
    assert r.status_code == 200 and r.json()["status"] == "success"
