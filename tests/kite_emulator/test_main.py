"""``algo-kite-emulator`` as a trader runs it: its own process, driven over HTTP, stopped by SIGTERM."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

from kiteconnect import KiteConnect

from tests.helpers import wait_until

COMMAND = [sys.executable, "-m", "daemons.kite_emulator", "--port", "0", "--ws-port", "0"]


def test_cli_serves_moves_prices_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(COMMAND + ["--instrument", "NSE:INFY=408065", "--price", "NSE:INFY=1500",
                                       "--walk", "0.02", "--api-key", "k", "--access-token", "t"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        found = re.search(r"root=(\S+) ws_url=(ws://127\.0\.0\.1:\d+) api_key=k access_token=t", banner)
        assert found, banner
        kite = KiteConnect("k", "t", root=found[1])
        assert kite.profile()["user_id"] == "AB1234"
        quote = kite.quote("NSE:INFY")["NSE:INFY"]
        assert quote["ohlc"]["close"] == 1500.0
        wait_until(lambda: kite.ltp("NSE:INFY")["NSE:INFY"]["last_price"] != 1500.0, 5, "the random walk to move")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_cli_refuses_an_unknown_priced_instrument() -> None:
    done = subprocess.run(COMMAND + ["--price", "NSE:NOSUCH=1"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "unknown instrument" in done.stderr and "--instrument NSE:NOSUCH=TOKEN" in done.stderr
