"""algo-marketdata under systemd: the paper feed ticks the whole universe onto the bus."""

from __future__ import annotations

import pytest

from daemons.algoctl.sandbox import Sandbox
from tests.helpers import wait_until
from tests.systemd.busclient import Listener
from tests.systemd.test_bus import metric

pytestmark = pytest.mark.systemd

MD = "algo-marketdata.service"


def test_paper_feed_ticks_every_instrument_onto_the_bus(sandbox: Sandbox) -> None:
    with Listener(sandbox, "marketdata.*") as listener:
        sandbox.systemctl("start", MD, check=True)
        status = sandbox.show(MD, "StatusText")["StatusText"]
        assert status.startswith("paper feed: 52 instruments, session at 09:")
        wait_until(lambda: len({ev.key for _, ev in listener.events}) == 52, 10, "a tick of every instrument")
        ticks = {ev.payload["symbol"]: ev for _, ev in listener.events}
    fut = next(ev for sym, ev in ticks.items() if sym.startswith("NIFTY") and sym.endswith("FUT"))
    assert fut.key == f"{fut.payload['token']}|{fut.payload['symbol']}|NIFTY"  # token|symbol|underlying
    assert fut.source == "marketdata" and fut.type == "marketdata.tick"
    assert set(fut.payload) >= {"last_price", "bid", "ask", "volume", "oi", "exchange_ts"}
    assert ticks["NIFTY 50"].payload["last_price"] < fut.payload["last_price"]  # carry
    assert sum(sym[-2:] in ("CE", "PE") and sym[-3].isdigit() for sym in ticks) == 44
    assert metric(9472, "algo_marketdata_instruments") == 52
    assert metric(9472, "algo_marketdata_tick_age_seconds") < 2.0


def test_a_missing_instruments_dump_is_a_config_error(sandbox: Sandbox) -> None:
    (sandbox.etc / "instruments" / "paper.csv").unlink()
    sandbox.systemctl("start", MD)
    wait_until(lambda: sandbox.show(MD, "ActiveState")["ActiveState"] == "failed", 15, "the unit to fail")
    assert sandbox.show(MD, "ExecMainStatus", "NRestarts") == {"ExecMainStatus": "78", "NRestarts": "0"}
    errors = sandbox.journalctl("-u", MD, "-p", "err", "-o", "cat").stdout
    assert "daemons.marketdata.instruments: /etc/algo/instruments/paper.csv: No such file or directory" in errors
