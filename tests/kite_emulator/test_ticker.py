"""The real KiteTicker against the emulator's ticker: modes, ticks, heartbeats, order updates, drops."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from kiteconnect import KiteConnect

from daemons.kite_emulator import Emulator
from tests.helpers import wait_until
from tests.kite_emulator.conftest import INFY, TickerClient

SBIN = 779521
FULL = dict(
    last_price=1573.7, last_traded_quantity=7, average_traded_price=1570.37, volume_traded=1192471,
    total_buy_quantity=256443, total_sell_quantity=363009, open=1569.15, high=1575.0, low=1561.05, close=1567.8,
    last_trade_time=datetime(2021, 7, 5, 10, 41, 27), oi=12, oi_day_high=15, oi_day_low=3,
    exchange_timestamp=datetime(2021, 7, 5, 10, 41, 28),
)
DEPTH: dict[str, list[dict[str, Any]]] = {
    "buy": [{"quantity": 5, "price": 1573.4, "orders": 1}, {"quantity": 140, "price": 1573.0, "orders": 2}],
         "sell": [{"quantity": 172, "price": 1573.7, "orders": 3}]}
NO_LEVEL = {"quantity": 0, "price": 0.0, "orders": 0}


def subscribed(emulator: Emulator, token: int, mode: str) -> Callable[[], bool]:
    return lambda: any(s.get(token) == mode for s in emulator.subscriptions())


def connected(client: TickerClient, emulator: Emulator, mode: str = "quote", token: int = INFY) -> TickerClient:
    """Wait for the connection, subscribe, set the mode, and wait until the emulator has it."""
    wait_until(client.kws.is_connected, 5, "the ticker to connect")
    client.call(client.kws.subscribe, [token])
    client.call(client.kws.set_mode, mode, [token])
    wait_until(subscribed(emulator, token, mode), 5, f"the {mode} subscription to reach the emulator")
    return client


def test_full_mode_ticks_equal_what_was_pushed(emulator: Emulator, ticker_client: Callable[..., TickerClient]) -> None:
    client = connected(ticker_client(), emulator, "full")
    emulator.push_tick(INFY, depth=DEPTH, **FULL)
    (tick,) = wait_until(lambda: client.ticks, 5, "a tick")
    assert tick == {
        "tradable": True, "mode": "full", "instrument_token": INFY,
        **{k: FULL[k] for k in ("last_price", "last_traded_quantity", "average_traded_price", "volume_traded",
                                "total_buy_quantity", "total_sell_quantity", "last_trade_time", "oi", "oi_day_high",
                                "oi_day_low", "exchange_timestamp")},
        "ohlc": {k: FULL[k] for k in ("open", "high", "low", "close")},
        "change": (1573.7 - 1567.8) * 100 / 1567.8,
        "depth": {"buy": DEPTH["buy"] + [NO_LEVEL] * 3, "sell": DEPTH["sell"] + [NO_LEVEL] * 4},
    }


def test_modes_and_unsubscribe(emulator: Emulator, ticker_client: Callable[..., TickerClient]) -> None:
    client = connected(ticker_client(), emulator, "ltp")
    emulator.set_price("NSE:INFY", 1500.0)
    wait_until(lambda: client.ticks, 5, "an ltp tick")
    assert client.ticks[-1] == {"tradable": True, "mode": "ltp", "instrument_token": INFY, "last_price": 1500.0}
    client.call(client.kws.set_mode, "quote", [INFY])
    wait_until(subscribed(emulator, INFY, "quote"), 5, "quote mode")
    emulator.set_price("NSE:INFY", 1501.0)
    wait_until(lambda: len(client.ticks) == 2, 5, "a quote tick")
    assert client.ticks[-1]["mode"] == "quote" and "depth" not in client.ticks[-1]
    emulator.push_tick(SBIN, last_price=600.0)  # not subscribed: not sent
    client.call(client.kws.unsubscribe, [INFY])
    wait_until(lambda: emulator.subscriptions() == [{}], 5, "the unsubscription")
    emulator.set_price("NSE:INFY", 1502.0)
    beats = client.heartbeats
    wait_until(lambda: client.heartbeats > beats, 5, "a heartbeat after the last push")
    assert len(client.ticks) == 2


def test_heartbeats_reach_on_message_but_not_on_ticks(emulator: Emulator,
                                                      ticker_client: Callable[..., TickerClient]) -> None:
    client = ticker_client()
    wait_until(lambda: client.heartbeats >= 3, 5, "three heartbeats (0.2 s apart)")
    assert client.ticks == []


def test_order_updates_fire_on_order_update(emulator: Emulator, kite: KiteConnect,
                                            ticker_client: Callable[..., TickerClient]) -> None:
    client = ticker_client()
    wait_until(lambda: emulator.subscriptions() == [{}], 5, "the ticker connection")
    emulator.set_price("NSE:INFY", 1500.0)
    emulator.add_rule(tag="UPD1", slices=[2])
    order_id = kite.place_order("regular", "NSE", "INFY", "BUY", 5, "MIS", "MARKET", tag="UPD1")
    emulator.set_price("NSE:INFY", 1500.5)
    wait_until(lambda: len(client.updates) == 3, 5, "OPEN, UPDATE and COMPLETE")
    assert [(u["order_id"], u["status"], u["filled_quantity"], u["unfilled_quantity"]) for u in client.updates] == [
        (order_id, "OPEN", 0, 5), (order_id, "UPDATE", 2, 3), (order_id, "COMPLETE", 5, 0)]
    assert client.updates[-1]["tag"] == "UPD1"


def test_drops_k_times_then_the_client_resubscribes_by_itself(emulator: Emulator,
                                                             ticker_client: Callable[..., TickerClient]) -> None:
    client = connected(ticker_client(), emulator, "full")
    emulator.faults.drop_ws(after_messages=0, times=2)  # now, and right after the first reconnect
    wait_until(lambda: client.connects == 3, 10, "two reconnects")
    wait_until(subscribed(emulator, INFY, "full"), 5, "the client's own resubscription")
    assert len(client.errors) == 2 and all(code == 1006 for code, _ in client.errors)  # unclean: no close frame
    emulator.set_price("NSE:INFY", 1500.0)
    wait_until(lambda: client.ticks, 5, "a tick after reconnecting")


def test_drop_after_n_tick_messages(emulator: Emulator, ticker_client: Callable[..., TickerClient]) -> None:
    client = connected(ticker_client(), emulator, "ltp")
    emulator.faults.drop_ws(after_messages=2)
    for price in (1500.0, 1500.05):
        emulator.set_price("NSE:INFY", price)
    wait_until(lambda: client.connects == 2, 5, "the reconnect after two ticks")
    assert [t["last_price"] for t in client.ticks] == [1500.0, 1500.05]


def test_refusal_then_the_client_reconnects_once_it_ends(emulator: Emulator,
                                                         ticker_client: Callable[..., TickerClient]) -> None:
    client = connected(ticker_client(), emulator, "quote")
    emulator.faults.refuse_ws(seconds=1.0)
    emulator.faults.drop_ws()
    started = time.monotonic()
    wait_until(lambda: client.connects == 2, 10, "a reconnect after the refusal")
    assert time.monotonic() - started >= 0.9
    assert len(client.errors) >= 2  # the drop, then at least one refused handshake
    wait_until(subscribed(emulator, INFY, "quote"), 5, "the resubscription")


def test_bad_token_is_refused_and_bad_messages_answered_with_an_error(
        emulator: Emulator, ticker_client: Callable[..., TickerClient]) -> None:
    stranger = ticker_client(access_token="stolen")
    wait_until(lambda: stranger.errors, 5, "the 403 handshake")
    assert stranger.connects == 0
    client = ticker_client()
    wait_until(client.kws.is_connected, 5, "the ticker to connect")
    client.call(client.kws.ws.sendMessage, b'{"a": "mode", "v": ["snapshot", [408065]]}')
    wait_until(lambda: client.errors, 5, "an error message")
    assert client.errors[0][0] == 0 and "snapshot" in client.errors[0][1]  # text {"type": "error"} -> code 0


def test_closing_the_emulator_closes_clients(reactor: object) -> None:
    with Emulator(heartbeat_interval=5) as em:
        client = TickerClient(em, reactor)
        client.connect()
        wait_until(client.kws.is_connected, 5, "the ticker to connect")
    wait_until(lambda: not client.kws.is_connected(), 5, "the client to see the close")
    client.close()
