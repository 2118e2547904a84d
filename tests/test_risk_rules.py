"""Risk as pure rules: each limit blocks with its reason, exits are never blocked by exposure limits."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from daemons.risk.rules import RiskRules
from daemons.runtime.book import Position
from daemons.runtime.calendar import IST
from daemons.runtime.config import MarketSection, RiskSection
from tests.conftest import REPO

MARKET = int(datetime(2026, 11, 23, 10, 0, tzinfo=IST).timestamp() * 1e9)


def sig(symbol: str = "INFY", side: str = "BUY", qty: int = 10, entry: bool = True, engine: str = "equity",
        limit: float | None = None) -> dict[str, Any]:
    return {"symbol": symbol, "side": side, "quantity": qty, "entry": entry, "engine": engine,
            "strategy": "s", "limit_price": limit, "order_type": "LIMIT" if limit else "MARKET"}


@pytest.fixture
def rules() -> RiskRules:
    r = RiskRules(RiskSection(max_quantity=100, max_notional=150_000, max_open_positions=2, max_order_value=120_000,
                              orders_per_second=5, daily_loss_limit={"equity": 1_000}, fleet_daily_loss_limit=5_000),
                  MarketSection(holidays=[date(2026, 11, 24)]))
    r.mark("INFY", 1000.0, MARKET)
    r.mark("TCS", 4000.0, MARKET)
    r.mark("HDFCBANK", 1700.0, MARKET)
    return r


def test_position_accounting() -> None:
    p = Position()
    p.fill(10, 100)
    p.fill(10, 110)
    assert (p.quantity, p.average) == (20, 105)
    p.fill(-5, 120)
    assert (p.quantity, p.realised) == (15, 75)
    p.fill(-20, 100)
    assert (p.quantity, p.average, p.realised) == (-5, 100, 0)
    assert p.unrealised(90) == 50
    p.fill(5, 90)
    assert (p.quantity, p.realised) == (0, 50)


def test_each_limit_blocks_with_its_reason(rules: RiskRules) -> None:
    assert rules.check(sig(), 0.0).approved
    assert rules.check(sig(symbol="WIPRO"), 0.1).reason == "no market price for WIPRO yet"
    assert rules.check(sig(qty=130), 0.2).reason == "order value 130,000 exceeds 120,000"
    assert rules.check(sig(limit=1030.0), 0.3).reason == "limit 1030 is more than 2% from last 1000"
    rules.book.fill("equity", "INFY", "BUY", 95, 1000.0)
    assert rules.check(sig(qty=10), 0.4).reason == "position 105 would exceed 100 for INFY"
    rules.book.fill("equity", "TCS", "BUY", 30, 4000.0)
    assert rules.check(sig(symbol="TCS", qty=10), 0.5).reason == "position value 160,000 would exceed 150,000"
    assert rules.check(sig(symbol="HDFCBANK"), 0.6).reason == "already 2 open positions"
    # Exits reduce exposure: no position, notional or count limit applies to them.
    assert rules.check(sig(side="SELL", qty=95, entry=False), 0.7).approved


def test_hours_holidays_and_the_market_clock(rules: RiskRules) -> None:
    rules.mark("INFY", 1000.0, int(datetime(2026, 11, 23, 15, 31, tzinfo=IST).timestamp() * 1e9))
    assert rules.check(sig(), 0.0).reason == "outside trading hours (15:31 IST)"
    rules.mark("INFY", 1000.0, int(datetime(2026, 11, 24, 11, 0, tzinfo=IST).timestamp() * 1e9))
    assert rules.check(sig(), 0.1).reason == "2026-11-24 (Tuesday) is not a trading day"


def test_fleet_order_rate_limit(rules: RiskRules) -> None:
    decisions = [rules.check(sig(qty=1), 10.0 + i * 0.01) for i in range(8)]
    assert [d.approved for d in decisions] == [True] * 5 + [False] * 3
    assert decisions[-1].reason == "order rate limit (5/s)"
    assert rules.check(sig(qty=1), 10.5).approved  # tokens refill at 5/s


def test_loss_limit_blocks_entries_and_the_kill_switch_blocks_every_entry(rules: RiskRules) -> None:
    rules.book.fill("equity", "INFY", "BUY", 50, 1000.0)
    rules.mark("INFY", 979.0, MARKET)  # -1,050 unrealised
    assert rules.check(sig(symbol="TCS"), 0.0).reason == "equity daily loss -1,050 breached its limit 1,000"
    assert rules.check(sig(symbol="TCS", engine="fno"), 0.1).approved  # another engine is fine
    assert rules.check(sig(side="SELL", qty=50, entry=False), 0.2).approved  # and exits always are
    assert rules.engage("manual: algoctl kill-switch") and not rules.engage("again")
    assert rules.check(sig(symbol="TCS", engine="fno"), 0.3).reason == "kill switch engaged: manual: algoctl kill-switch"
    assert rules.check(sig(side="SELL", qty=50, entry=False), 0.4).approved


def test_risk_reload_applies_new_limits_and_keeps_positions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from daemons.risk.main import RiskDaemon
    from daemons.runtime.config import FleetConfig
    from daemons.runtime.metrics import DaemonMetrics

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    risk = RiskDaemon(FleetConfig(), DaemonMetrics("risk"))
    risk.rules.book.fill("equity", "INFY", "BUY", 10, 1000.0)
    tighter = FleetConfig.model_validate({"daemons": {"risk": {"max_order_value": 5000.0, "orders_per_second": 2.0}}})
    asyncio.run(risk.reload(tighter))
    assert risk.rules.limits.max_order_value == 5000.0 and risk.rules.rate.rate == 2.0
    assert risk.rules.book.quantity("INFY") == 10


def test_every_decision_code_is_declared() -> None:
    import re

    from daemons.risk import rules

    source = (REPO / "daemons" / "risk" / "rules.py").read_text() + (REPO / "daemons" / "risk" / "main.py").read_text()
    used = set(re.findall(r'Decision\((?:True|False), "(\w+)"', source)) | {"approved"}
    assert used == set(rules.CODES)


def test_a_strategy_over_its_own_loss_limit_is_blocked_while_the_others_trade() -> None:
    rules = RiskRules(RiskSection(strategy_daily_loss_limit={"rsi-infy": 1000.0}), MarketSection())
    rules.mark("INFY", 1000.0, MARKET)
    rules.fill("equity", "rsi-infy", "INFY", "BUY", 10, 1000.0)
    rules.mark("INFY", 880.0, MARKET)  # -1,200 for rsi-infy
    blocked = rules.check({**sig(), "strategy": "rsi-infy"}, 1.0)
    assert (blocked.code, blocked.reason) == ("loss_limit", "rsi-infy daily loss -1,200 breached its limit 1,000")
    assert rules.check({**sig(), "strategy": "rsi-reliance"}, 2.0).approved
    assert rules.kill_switch is None


def test_a_new_day_restarts_realised_pnl_and_keeps_open_positions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Yesterday's losses must not count against today's daily limit; the position itself carries over."""
    import asyncio

    import orjson

    from daemons.risk.main import RiskDaemon
    from daemons.runtime.config import FleetConfig
    from daemons.runtime.metrics import DaemonMetrics

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    yesterday = RiskDaemon(FleetConfig(), DaemonMetrics("risk"))
    yesterday.rules.fill("equity", "rsi-infy", "INFY", "BUY", 20, 1000.0)
    yesterday.rules.fill("equity", "rsi-infy", "INFY", "SELL", 10, 900.0)  # -1,000 realised
    yesterday.seen_fills.add("F1")
    yesterday.day = "2026-11-19"
    yesterday.save()

    today = RiskDaemon(FleetConfig(), DaemonMetrics("risk"))
    asyncio.run(today.setup())
    position = today.rules.book.positions[("equity", "INFY")]
    assert (position.quantity, position.average, position.realised) == (10, 1000.0, 0.0)
    assert today.rules.strategies.pnl("rsi-infy")[0] == 0.0 and today.seen_fills == set()
    assert orjson.loads((tmp_path / "checkpoint.json").read_bytes())["day"] == today.day != "2026-11-19"

    today.rules.fill("equity", "rsi-infy", "INFY", "SELL", 5, 900.0)  # -500 realised today
    today.save()
    again = RiskDaemon(FleetConfig(), DaemonMetrics("risk"))  # a restart later the same day keeps today's P&L
    asyncio.run(again.setup())
    assert again.rules.book.positions[("equity", "INFY")].realised == -500.0 and again.day == today.day


def test_a_signal_that_overtook_its_tick_is_judged_on_that_tick_and_never_on_an_older_mark(rules: RiskRules) -> None:
    """On the bus a signal may arrive before the tick that caused it: its tick_price and tick_exchange_ts mark the
    symbol (a first tick as much as a newer one), but a signal carrying an older tick moves no mark back."""
    assert rules.check(sig("WIPRO"), 0.0).code == "no_price"
    assert rules.check({**sig("WIPRO"), "tick_price": 250.0, "tick_exchange_ts": MARKET}, 0.1).approved
    assert rules.book.marks["WIPRO"] == 250.0
    rules.check({**sig("INFY", qty=1), "tick_price": 900.0, "tick_exchange_ts": MARKET - 10**9}, 0.2)
    assert rules.book.marks["INFY"] == 1000.0


def test_risk_publishes_the_pnl_when_it_changes_and_not_otherwise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``risk.pnl`` is what a console streams: it comes when the booked P&L moves, never as a steady
    drip of the same figures."""
    import orjson

    from daemons.risk.main import RiskDaemon
    from daemons.runtime.config import FleetConfig
    from daemons.runtime.metrics import DaemonMetrics
    from tests.helpers import unsent_frames

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    risk = RiskDaemon(FleetConfig(), DaemonMetrics("risk"))

    def published() -> list[dict[str, Any]]:
        return [orjson.loads(f.body)["payload"] for f in unsent_frames(risk.bus) if f.topic == b"risk.pnl"]

    risk._publish_pnl()
    assert published() == [{"realised": 0.0, "unrealised": 0.0, "by_engine": {}, "open_positions": 0}]
    risk._publish_pnl()
    assert len(published()) == 1  # nothing moved: nothing sent
    risk.rules.book.fill("equity", "INFY", "BUY", 10, 1000.0)
    risk.rules.mark("INFY", 1012.5, MARKET)
    risk._publish_pnl()
    risk._publish_pnl()
    assert published()[1:] == [{"realised": 0.0, "unrealised": 125.0, "by_engine": {"equity": {"realised": 0.0,
                                "unrealised": 125.0}}, "open_positions": 1}]


def test_a_fill_is_one_append_to_the_log_and_a_restart_neither_loses_nor_doubles_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Positions are what risk must not forget, and risk is on the order path: a fill is made durable by one
    appended record (its id added to the day's), not by rewriting a state that grows with the day's fills;
    checkpoint.json takes the records at the serving loop's next fold (FOLD_SEC)."""
    import asyncio

    import orjson

    from daemons.risk.main import RiskDaemon
    from daemons.runtime.config import FleetConfig
    from daemons.runtime.envelope import EXECUTION_FILL, Event
    from daemons.runtime.metrics import DaemonMetrics
    from daemons.runtime.wal import RecordLog

    def fill(n: int) -> Event:
        payload = {"fill_id": f"F{n}", "engine": "equity", "strategy": "rsi-infy", "symbol": "INFY", "side": "BUY",
                   "quantity": 10, "price": 1000.0}
        return Event(EXECUTION_FILL, "execution", n, payload, f"e{n}", n, f"e{n}")

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    risk = RiskDaemon(FleetConfig(), DaemonMetrics("risk"))
    asyncio.run(risk.setup())  # writes the day into checkpoint.json
    written = (tmp_path / "checkpoint.json").read_bytes()
    for n in (1, 2):
        risk._on_fill(fill(n))
    assert (tmp_path / "checkpoint.json").read_bytes() == written, "a fill does not rewrite the state"
    records = RecordLog(tmp_path / "checkpoint.wal").records
    assert [r.get("add") for r in records] == [{"seen_fills": ["F1"]}, {"seen_fills": ["F2"]}]
    assert records[-1]["state"]["positions"][0]["quantity"] == 20 and "seen_fills" not in records[-1]["state"]
    risk.checkpoint.close()

    again = RiskDaemon(FleetConfig(), DaemonMetrics("risk"))  # kill -9 before the loop folded the log in
    asyncio.run(again.setup())
    assert again.seen_fills == {"F1", "F2"} and again.rules.book.positions[("equity", "INFY")].quantity == 20
    again._on_fill(fill(2))  # execution sends the day's fills again after a restart
    assert again.rules.book.positions[("equity", "INFY")].quantity == 20
    again.save()
    saved = orjson.loads((tmp_path / "checkpoint.json").read_bytes())
    assert saved["seen_fills"] == ["F1", "F2"] and (tmp_path / "checkpoint.wal").stat().st_size == 0
    again.checkpoint.close()


def test_the_serving_loop_folds_the_fills_into_checkpoint_json_every_fold_sec_not_every_second(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rewrite of checkpoint.json holds risk's loop for 1-2 ms: it comes every FOLD_SEC, not every second a
    fill came in (when a signal arriving meanwhile waited for it). What the log holds is read with the file."""
    import asyncio

    from daemons.risk import main as risk_main
    from daemons.runtime.checkpoint import peek
    from daemons.runtime.config import FleetConfig
    from daemons.runtime.envelope import EXECUTION_FILL, Event
    from daemons.runtime.metrics import DaemonMetrics

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    risk = risk_main.RiskDaemon(FleetConfig(), DaemonMetrics("risk"))
    payload = {"fill_id": "F1", "engine": "equity", "strategy": "rsi-infy", "symbol": "INFY", "side": "BUY",
               "quantity": 10, "price": 1000.0}

    async def serve() -> None:
        await risk.setup()
        written = (tmp_path / "checkpoint.json").read_bytes()
        risk._on_fill(Event(EXECUTION_FILL, "execution", 1, payload, "e1", 1, "e1"))
        runner = asyncio.create_task(risk.run())
        await asyncio.sleep(1.3)
        assert (tmp_path / "checkpoint.json").read_bytes() == written, "no rewrite a second after a fill"
        state = peek(tmp_path / "checkpoint.json")
        assert state is not None and state["seen_fills"] == ["F1"]  # the file and its log, as a restart reads them
        monkeypatch.setattr(risk_main, "FOLD_SEC", 0.0)
        await asyncio.sleep(1.1)
        assert (tmp_path / "checkpoint.wal").stat().st_size == 0, "folded at the next FOLD_SEC"
        risk.stopping.set()
        await runner

    asyncio.run(serve())
    risk.checkpoint.close()


def test_a_day_roll_on_a_full_disk_does_not_stop_risk_and_the_next_fill_carries_the_day(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The roll's rewrite of checkpoint.json is refused: risk runs on, and the next fill's record carries the
    new day's fill ids whole (a restart must not find yesterday's)."""
    import asyncio
    import errno

    from daemons.risk.main import RiskDaemon
    from daemons.runtime.checkpoint import Checkpoint
    from daemons.runtime.config import FleetConfig
    from daemons.runtime.envelope import EXECUTION_FILL, Event
    from daemons.runtime.metrics import DaemonMetrics

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    risk = RiskDaemon(FleetConfig(), DaemonMetrics("risk"))
    risk.seen_fills.add("F-yesterday")
    risk.day = "2026-11-19"
    risk.save()
    refused: list[str] = []

    def full(state: dict[str, object]) -> None:
        refused.append(str(state["day"]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(risk.checkpoint, "write", full)
    risk._roll_day()  # no exception: the serving loop goes on
    assert refused and risk.checkpoint.trouble and risk.seen_fills == set()
    payload = {"fill_id": "F1", "engine": "equity", "strategy": "s", "symbol": "INFY", "side": "BUY", "quantity": 1,
               "price": 100.0}
    risk._on_fill(Event(EXECUTION_FILL, "execution", 1, payload, "e1", 1, "e1"))
    risk.checkpoint.close()
    assert Checkpoint(tmp_path / "checkpoint.json").read()["seen_fills"] == ["F1"]  # type: ignore[index]
    again = RiskDaemon(FleetConfig(), DaemonMetrics("risk"))
    asyncio.run(again.setup())
    assert again.seen_fills == {"F1"}
