"""REST fault switches, as the real client meets them: exception classes, timeouts, held replies."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
import requests
from kiteconnect import KiteConnect
from kiteconnect.exceptions import NetworkException, TokenException

from daemons.kite_emulator import Emulator
from tests.helpers import wait_until


def test_429_storm_raises_network_exception_then_recovers(kite: KiteConnect, emulator: Emulator) -> None:
    emulator.faults.rate_limit(count=3)
    for _ in range(3):
        with pytest.raises(NetworkException, match="Too many requests") as err:
            kite.profile()
        assert err.value.code == 429
    assert kite.profile()["user_id"] == "AB1234"


def test_429_storm_for_seconds_on_one_prefix(kite: KiteConnect, emulator: Emulator) -> None:
    emulator.faults.rate_limit(seconds=0.3, prefix="/orders")
    emulator.set_price("NSE:INFY", 1500.0)
    with pytest.raises(NetworkException):
        kite.place_order("regular", "NSE", "INFY", "BUY", 1, "CNC", "MARKET")
    assert kite.profile()  # other routes are not limited
    time.sleep(0.35)
    assert kite.place_order("regular", "NSE", "INFY", "BUY", 1, "CNC", "MARKET")


def test_token_expiry_until_a_new_session(kite: KiteConnect, emulator: Emulator) -> None:
    expired: list[bool] = []
    kite.set_session_expiry_hook(lambda: expired.append(True))
    emulator.expire_tokens()
    for call in (kite.profile, kite.orders, kite.positions):
        with pytest.raises(TokenException) as err:
            call()
        assert err.value.code == 403
    assert expired == [True] * 3
    kite.generate_session("morning-login", emulator.api_secret)
    assert kite.orders() == []
    stale = KiteConnect(emulator.api_key, emulator.access_token, root=emulator.root)
    with pytest.raises(TokenException):
        stale.profile()


def test_slow_reply_times_the_client_out_after_the_order_is_placed(kite: KiteConnect, emulator: Emulator) -> None:
    emulator.set_price("NSE:INFY", 1500.0)
    emulator.faults.slow(0.3, count=1)
    started = time.monotonic()
    kite.profile()
    assert time.monotonic() - started >= 0.3
    impatient = KiteConnect(emulator.api_key, emulator.access_token, root=emulator.root, timeout=0.1)
    emulator.faults.slow(0.5, count=1, prefix="/orders")
    with pytest.raises(requests.exceptions.ReadTimeout):
        impatient.place_order("regular", "NSE", "INFY", "BUY", 1, "CNC", "MARKET", tag="SLOW1")
    assert [o["tag"] for o in kite.orders()] == ["SLOW1"]  # the ambiguous outcome a client must reconcile


def test_swallowed_reply_is_held_until_the_client_is_killed(kite: KiteConnect, emulator: Emulator) -> None:
    """The crash test's building block: the order is in the book, its client died waiting for the id."""
    emulator.set_price("NSE:INFY", 1500.0)
    emulator.faults.swallow_replies(count=1)
    client = textwrap.dedent(f"""
        from kiteconnect import KiteConnect
        kite = KiteConnect({emulator.api_key!r}, {emulator.access_token!r}, root={emulator.root!r}, timeout=30)
        print(kite.place_order("regular", "NSE", "INFY", "BUY", 1, "CNC", "MARKET", tag="CRASH1"), flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", client], stdout=subprocess.PIPE)
    try:
        wait_until(lambda: emulator.held_replies == 1, 10, "the place_order reply to be held")
        assert [(o["tag"], o["status"]) for o in kite.orders()] == [("CRASH1", "COMPLETE")]
        assert proc.poll() is None  # still waiting for its order id
    finally:
        proc.kill()
        proc.wait()
    assert proc.stdout is not None and proc.stdout.read() == b""
    wait_until(lambda: emulator.held_replies == 0, 5, "the held reply to be released")
    assert kite.place_order("regular", "NSE", "INFY", "BUY", 1, "CNC", "MARKET")  # only the next one was swallowed


def test_faults_over_the_admin_route(kite: KiteConnect, emulator: Emulator) -> None:
    """What a trader's out-of-process emulator is driven with."""
    admin = emulator.root + "/__emulator__/"
    r = requests.post(admin + "faults", json={"rate_limit": {"count": 1}, "slow": {"delay": 0.01, "count": 1}},
                      timeout=5)
    assert r.json()["data"]["rate_limit"]["count"] == 1
    with pytest.raises(NetworkException):
        kite.profile()
    requests.post(admin + "faults", json={"expire_tokens": True}, timeout=5)
    with pytest.raises(TokenException):
        kite.profile()
    kite.generate_session("again", emulator.api_secret)
    requests.post(admin + "faults", json={"rate_limit": {"seconds": 60}}, timeout=5)
    assert requests.delete(admin + "faults", timeout=5).json()["data"]["rate_limit"] is None
    assert kite.profile()
    assert requests.post(admin + "price", json={"instrument": "NSE:INFY", "price": 1490.5}, timeout=5).ok
    assert kite.ltp("NSE:INFY")["NSE:INFY"]["last_price"] == 1490.5
    assert requests.post(admin + "tick", json={"instrument_token": 408065, "last_price": 1491.0}, timeout=5).ok
    assert requests.post(admin + "rules", json={"reject": "closed for the day", "times": 1}, timeout=5).ok
    rejected = kite.place_order("regular", "NSE", "INFY", "BUY", 1, "CNC", "MARKET")
    state = requests.get(admin + "state", timeout=5).json()["data"]
    assert [(o["order_id"], o["status"], o["average_price"]) for o in state["orders"]] == [(rejected, "REJECTED", 0.0)]
    bad = requests.post(admin + "faults", json={"flood": {}}, timeout=5)
    assert bad.status_code == 400 and "unknown fault" in bad.json()["message"]
    assert requests.post(admin + "price", json={"instrument": "NSE:NOSUCH", "price": 1}, timeout=5).status_code == 400


def test_fault_windows_need_a_bound(emulator: Emulator) -> None:
    with pytest.raises(ValueError, match="count, seconds"):
        emulator.faults.rate_limit()
    with pytest.raises(ValueError):
        emulator.faults.drop_ws(times=0)
