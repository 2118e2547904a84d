"""Strategies are pure: ticks in, signals out; a snapshot continues exactly where it stopped."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from daemons.marketdata.contracts import derivatives
from daemons.marketdata.instruments import load_instruments
from daemons.marketdata.session import SessionClock
from daemons.marketdata.simulator import MarketSimulator
from daemons.runtime.calendar import IST
from daemons.strategies import Fill, Tick, build
from daemons.strategies.indicators import EMA, RSI
from tests.conftest import REPO
from tests.test_marketdata_sim import DAY, PAPER

T0 = int(datetime(2026, 11, 23, 9, 15, tzinfo=IST).timestamp() * 1e9)


def tick(symbol: str, price: float, n: int = 0, **kw: object) -> Tick:
    base = dict(token=1, symbol=symbol, last_price=price, bid=price - 0.05, ask=price + 0.05, volume=n, oi=0,
                exchange_ts=T0 + n * 1_000_000_000, type="FUT", underlying="NIFTY", strike=0.0, expiry=None)
    base.update(kw)
    return Tick(**base)  # type: ignore[arg-type]


def test_indicators_match_textbook_values() -> None:
    ema = EMA(3)
    assert [ema.update(x) for x in (1, 2, 3, 4)] == [None, None, 2.0, 3.0]
    rsi = RSI(2)
    assert [rsi.update(x) for x in (10, 11, 12)] == [None, None, 100.0]
    assert rsi.update(11) == pytest.approx(100 - 100 / (1 + (1.0 / 2) / (1.0 / 2)))  # gain .5, loss .5 -> 50


def test_ema_crossover_goes_long_then_reverses_short_with_an_exit_first() -> None:
    s = build("ema_crossover", "ema-nifty", {"symbol": "NIFTYFUT", "quantity": 75, "fast": 2, "slow": 4})
    prices = [100, 99, 98, 97, 96, 97, 99, 102]  # down, then a turn up
    signals = [sig for n, p in enumerate(prices) for sig in s.on_tick(tick("NIFTYFUT", p, n))]
    assert [(x.side, x.quantity, x.entry) for x in signals] == [("BUY", 75, True)]
    assert "EMA2 crossed above EMA4" in signals[0].reason
    s.on_fill(Fill("NIFTYFUT", "BUY", 75, 102.0))
    down = [sig for n, p in enumerate([100, 96, 92], start=8) for sig in s.on_tick(tick("NIFTYFUT", p, n))]
    assert [(x.side, x.quantity, x.entry) for x in down] == [("SELL", 75, False), ("SELL", 75, True)]
    assert s.on_tick(tick("OTHER", 1.0)) == []


def test_rsi_reversion_buys_oversold_and_sells_the_bounce_once_each() -> None:
    s = build("rsi_reversion", "rsi-infy", {"symbol": "INFY", "quantity": 10, "period": 3, "oversold": 30, "exit_above": 60})
    falling = [100, 101, 102, 101, 99, 96, 94, 93]
    out = [sig for n, p in enumerate(falling) for sig in s.on_tick(tick("INFY", p, n))]
    assert [(x.side, x.quantity, x.entry) for x in out] == [("BUY", 10, True)]
    s.on_fill(Fill("INFY", "BUY", 10, 93.0))
    rising = [97, 101, 104, 106]
    out = [sig for n, p in enumerate(rising, start=8) for sig in s.on_tick(tick("INFY", p, n))]
    assert [(x.side, x.quantity, x.entry) for x in out] == [("SELL", 10, False)]


def test_snapshot_restore_continues_identically() -> None:
    params = {"symbol": "NIFTYFUT", "quantity": 75, "fast": 3, "slow": 8}
    prices = [100 + ((n * 37) % 11) - n * 0.3 for n in range(60)] + [80 + n for n in range(40)]
    whole = build("ema_crossover", "a", params)
    expected = [sig for n, p in enumerate(prices) for sig in whole.on_tick(tick("NIFTYFUT", p, n))]
    first = build("ema_crossover", "a", params)
    got = [sig for n, p in enumerate(prices[:50]) for sig in first.on_tick(tick("NIFTYFUT", p, n))]
    second = build("ema_crossover", "a", params)
    second.restore(json.loads(json.dumps(first.snapshot())))
    got += [sig for n, p in enumerate(prices[50:], start=50) for sig in second.on_tick(tick("NIFTYFUT", p, n))]
    assert got == expected and expected


def test_short_straddle_on_the_simulated_chain_enters_once_and_stops_or_exits() -> None:
    spots = load_instruments(PAPER)
    nifty = next(i for i in spots if i.symbol == "NIFTY 50")
    sim = MarketSimulator(spots + derivatives(nifty, DAY, lot_size=75, strikes=3, step=50), seed=11,
                          clock=SessionClock(DAY, 750))
    s = build("short_straddle", "straddle", {"underlying": "NIFTY", "spot": "NIFTY 50", "quantity": 75, "step": 50,
                                             "stop_pct": 20})
    signals = []
    for _ in range(750):
        for payload in sim.step():
            for sig in s.on_tick(Tick.from_payload(payload)):
                signals.append((datetime.fromtimestamp(payload["exchange_ts"] / 1e9, IST).time(), sig))
                s.on_fill(Fill(sig.symbol, sig.side, sig.quantity, payload["last_price"]))
    entries = [sig for _, sig in signals if sig.entry]
    exits = [sig for _, sig in signals if not sig.entry]
    assert [(e.side, e.symbol[-2:]) for e in entries] == [("SELL", "CE"), ("SELL", "PE")]
    assert signals[0][0] >= datetime.strptime("09:20", "%H:%M").time()
    assert {e.symbol for e in exits} == {e.symbol for e in entries} and all(e.side == "BUY" for e in exits)
    assert exits[0].reason.startswith(("stop:", "time exit"))
    assert all(q == 0 for q in s.position.values())


def test_bad_parameters_are_clear() -> None:
    with pytest.raises(ValueError, match="fast < slow"):
        build("ema_crossover", "x", {"symbol": "A", "quantity": 1, "fast": 9, "slow": 9})
    with pytest.raises(ValueError, match="unexpected keyword argument 'colour'"):
        build("rsi_reversion", "x", {"symbol": "A", "quantity": 1, "colour": "red"})
    with pytest.raises(ValueError, match="unknown strategy kind 'martingale'"):
        build("martingale", "x", {})


def test_ema_crossover_by_underlying_trades_the_front_month_future() -> None:
    s = build("ema_crossover", "ema", {"underlying": "NIFTY", "quantity": 75, "fast": 2, "slow": 4})
    far = dict(type="FUT", underlying="NIFTY", expiry="2026-12-31")
    near = dict(type="FUT", underlying="NIFTY", expiry="2026-11-26")
    prices = [100, 99, 98, 97, 96, 97, 99, 102]
    out = []
    for n, p in enumerate(prices):
        s.on_tick(tick("NIFTY26DECFUT", p + 50, n, **far))
        out += s.on_tick(tick("NIFTY26NOVFUT", p, n, **near))
    assert [(x.symbol, x.side) for x in out] == [("NIFTY26NOVFUT", "BUY")]
    with pytest.raises(ValueError, match="exactly one of symbol and underlying"):
        build("ema_crossover", "x", {"quantity": 1})


def test_engine_reload_rebuilds_changed_strategies_and_keeps_their_position(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from daemons.engine.main import EquityEngine
    from daemons.runtime.config import load_config
    from daemons.runtime.metrics import DaemonMetrics

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    text = (REPO / "configs" / "paper.toml").read_text()
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    engine = EquityEngine(load_config(path), DaemonMetrics("equity"))
    engine.strategies["rsi-infy"].position["INFY"] = 10
    untouched = engine.strategies["rsi-reliance"]
    path.write_text(text.replace("symbol = \"INFY\", quantity = 10, period = 14", "symbol = \"INFY\", quantity = 20, period = 7"))
    asyncio.run(engine.reload(load_config(path)))
    rebuilt = engine.strategies["rsi-infy"]
    assert rebuilt.params["quantity"] == 20 and rebuilt.params["period"] == 7
    assert rebuilt.position == {"INFY": 10}
    assert engine.strategies["rsi-reliance"] is untouched
