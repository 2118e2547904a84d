"""algo-marketdata under systemd: the paper feed ticks the whole universe onto the bus."""

from __future__ import annotations

import pytest

from daemons.algoctl.sandbox import Sandbox
from daemons.features.cache import COLUMNS
from daemons.features.codec import snapshot_rows
from daemons.features.indicators import FEATURES
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


def test_the_feed_publishes_bars_and_features_and_answers_a_late_strategy(sandbox: Sandbox) -> None:
    """A 10-minute paper session is 375 exchange minutes: a bar of every instrument every ~1.6 s. No strategy
    of the sandbox reads bars, so the cache keeps history only for what a features.sync names, from then on."""
    with Listener(sandbox, "marketdata.ohlc", "features.bar", "features.snapshot", source="late-strategy") as listener:
        sandbox.systemctl("start", MD, check=True)
        listener.publish("features.sync", {"symbols": ["NIFTY 50", "INFY"]})  # nothing kept yet: no answer

        def of(topic: str) -> list[dict[str, object]]:
            return [ev.payload for _, ev in listener.events if ev.type == topic]

        wait_until(lambda: len({p["symbol"] for p in of("marketdata.ohlc")}) == 52 and len(of("features.bar")) >= 2 * 52,
                   20, "two bar closes of every instrument")
        bars, features = of("marketdata.ohlc"), of("features.bar")
        bar = next(p for p in bars if p["symbol"] == "NIFTY 50")
        assert bar["end"] - bar["start"] == 60 * 10**9 and bar["low"] <= bar["open"] <= bar["high"]  # type: ignore[operator]
        assert bar["low"] <= bar["close"] <= bar["high"] and bar["ticks"] >= 1  # type: ignore[operator]
        feature = next(p for p in features if p["symbol"] == "NIFTY 50" and p["start"] == bar["start"])
        assert len(feature["v"]) == len(FEATURES)  # type: ignore[arg-type]
        listener.publish("features.sync", {"symbols": ["NIFTY 50", "INFY"]})
        wait_until(lambda: len(of("features.snapshot")) == 2, 10, "a snapshot of each symbol asked for")
    snap = next(p for p in of("features.snapshot") if p["symbol"] == "NIFTY 50")
    assert snap["to"] == "late-strategy" and snap["columns"] == list(COLUMNS)
    rows = snapshot_rows(snap)
    published = {p["start"]: p["close"] for p in of("marketdata.ohlc") if p["symbol"] == "NIFTY 50"}
    cached = {int(row[COLUMNS.index("start_sec")]) * 10**9: row[COLUMNS.index("close")] for row in rows}
    assert len(cached) == len(rows) >= 2 and cached.items() <= published.items()  # the bars the feed published
    assert list(cached) == sorted(cached)  # oldest first
    assert metric(9472, "algo_marketdata_bars_total") >= 2 * 52
    assert metric(9472, "algo_marketdata_feature_snapshots_total") == 2
    assert metric(9472, 'algo_marketdata_bar_skipped_ticks_total{reason="late"}') == 0


def test_a_missing_instruments_dump_is_a_config_error(sandbox: Sandbox) -> None:
    (sandbox.etc / "instruments" / "paper.csv").unlink()
    sandbox.systemctl("start", MD)
    wait_until(lambda: sandbox.show(MD, "ActiveState")["ActiveState"] == "failed", 15, "the unit to fail")
    assert sandbox.show(MD, "ExecMainStatus", "NRestarts") == {"ExecMainStatus": "78", "NRestarts": "0"}
    errors = sandbox.journalctl("-u", MD, "-p", "err", "-o", "cat").stdout
    assert "daemons.marketdata.instruments: /etc/algo/instruments/paper.csv: No such file or directory" in errors
