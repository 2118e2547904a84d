"""The emulator's REST answers have the shape of Kite's recorded ones, route by route: its own
data on the static routes, and what its order book builds on the order routes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from daemons.kite_emulator import Emulator
from daemons.kite_emulator.book import AccountBook
from tests.conformance.conftest import Recorded
from tests.conformance.shapes import mismatches

INFY = 408065


@pytest.fixture
def emulator(recorded: Recorded) -> Iterator[Emulator]:
    with Emulator() as em:
        yield em


def call(em: Emulator, method: str, path: str, **params: Any) -> Any:
    """The raw ``data`` of a route, as JSON (the client would turn timestamps into datetimes)."""
    form = method in ("POST", "PUT")
    r = requests.request(method, em.root + path, timeout=5, data=params if form else None,
                         params=None if form else params,
                         headers={"Authorization": f"token {em.api_key}:{em.access_token}"})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def conforms(ours: Any, *theirs: Any) -> None:
    found = mismatches(ours, list(theirs))
    assert not found, "\n".join(found)


@pytest.mark.parametrize(("path", "params", "name"), [
    ("/user/profile", {}, "profile.json"),
    ("/user/margins", {}, "margins.json"),
    ("/user/margins/equity", {}, "margins_equity.json"),
    ("/user/margins/commodity", {}, "margin_commodity.json"),
    ("/portfolio/holdings", {}, "holdings.json"),
    ("/instruments/historical/256265/minute", {"from": "2026-01-05 09:15:00", "to": "2026-01-05 15:30:00"},
     "historical_minute.json"),
    ("/instruments/historical/256265/minute", {"from": "2026-01-05 09:15:00", "to": "2026-01-05 15:30:00", "oi": 1},
     "historical_oi.json"),
])
def test_static_routes_have_kites_shape(emulator: Emulator, recorded: Recorded, path: str, params: dict[str, Any],
                                        name: str) -> None:
    conforms(call(emulator, "GET", path, **params), recorded.data(name))


@pytest.mark.parametrize("priced", [False, True], ids=["shipped", "from-ticks"])
@pytest.mark.parametrize(("path", "name"), [("/quote", "quote.json"), ("/quote/ohlc", "ohlc.json"),
                                            ("/quote/ltp", "ltp.json")])
def test_quotes_have_kites_shape(emulator: Emulator, recorded: Recorded, path: str, name: str, priced: bool) -> None:
    theirs = recorded.data(name)
    if priced:
        emulator.push_tick(INFY, last_price=1500.0, close=1480.0, volume_traded=10,
                           depth={"buy": [{"price": 1499.95, "quantity": 10, "orders": 2}], "sell": []})
    ours = call(emulator, "GET", path, i=list(theirs))
    assert set(ours) == set(theirs)
    conforms(ours, theirs)


def test_order_margins_have_kites_shape(emulator: Emulator, recorded: Recorded) -> None:
    emulator.set_price("NSE:INFY", 1500.0)
    r = requests.post(emulator.root + "/margins/orders", timeout=5, json=[{
        "exchange": "NSE", "tradingsymbol": "INFY", "transaction_type": "BUY", "variety": "regular", "product": "MIS",
        "order_type": "MARKET", "quantity": 10, "price": 0, "trigger_price": 0}],
        headers={"Authorization": f"token {emulator.api_key}:{emulator.access_token}"})
    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["total"] == 3000.0  # the emulator's 20% of 10 x 1,500
    conforms(r.json()["data"], recorded.data("order_margins.json"))


def test_session_routes_have_kites_shape(emulator: Emulator, recorded: Recorded) -> None:
    checksum = hashlib.sha256((emulator.api_key + "rt" + emulator.api_secret).encode()).hexdigest()
    session = call(emulator, "POST", "/session/token", api_key=emulator.api_key, request_token="rt", checksum=checksum)
    conforms(session, recorded.data("generate_session.json"))
    conforms(call(emulator, "DELETE", "/session/token", api_key=emulator.api_key,
                  access_token=session["access_token"]), recorded.data("session_logout.json"))


def test_order_routes_have_kites_shape(emulator: Emulator, recorded: Recorded) -> None:
    emulator.set_price("NSE:INFY", 1500.0)
    emulator.add_rule(tag="PART", slices=[4])
    order = {"exchange": "NSE", "tradingsymbol": "INFY", "transaction_type": "BUY", "quantity": 10,
             "product": "MIS", "order_type": "MARKET", "variety": "regular"}
    filled = call(emulator, "POST", "/orders/regular", **order, tag="PART")
    conforms(filled, recorded.data("order_response.json"))
    resting = call(emulator, "POST", "/orders/regular", **dict(order, order_type="LIMIT", price=1400))["order_id"]
    conforms(call(emulator, "PUT", f"/orders/regular/{resting}", price=1405), recorded.data("order_modify.json"))
    conforms(call(emulator, "DELETE", f"/orders/regular/{resting}"), recorded.data("order_cancel.json"))
    emulator.add_rule(reject="RMS:Margin Exceeds", times=1)
    call(emulator, "POST", "/orders/regular", **order)
    emulator.set_price("NSE:INFY", 1501.0)  # fills the rest of the partial order

    conforms(call(emulator, "GET", "/orders"), recorded.data("orders.json"))
    # A history entry is the order's state then: the recorded history predates some keys of the recorded book.
    history = call(emulator, "GET", f"/orders/{resting}")
    conforms(history, recorded.data("order_info.json"), recorded.data("orders.json"))
    conforms(call(emulator, "GET", f"/orders/{filled['order_id']}/trades"), recorded.data("order_trades.json"))
    conforms(call(emulator, "GET", "/trades"), recorded.data("trades.json"))
    conforms(call(emulator, "GET", "/portfolio/positions"), recorded.data("positions.json"))


def test_order_updates_have_the_postbacks_shape(emulator: Emulator, recorded: Recorded) -> None:
    updates: list[dict[str, Any]] = []
    book = AccountBook(emulator.instruments, "AB1234", updates.append, 2.0)
    book.on_price(INFY, 1500.0)
    book.place("regular", {"exchange": "NSE", "tradingsymbol": "INFY", "transaction_type": "BUY", "quantity": "5",
                           "product": "MIS", "order_type": "MARKET", "tag": "POSTBACK1"})
    assert [u["status"] for u in updates] == ["OPEN", "COMPLETE"]
    for update in updates:  # tags: as on the order book's orders (the recorded postback has none to show)
        assert update["tags"] == ["POSTBACK1"]
        conforms({k: v for k, v in update.items() if k != "tags"}, recorded.json("postback.json"))
