"""One strategy's exception stays its own: the engine's other strategies still get every tick and
signal, the error is counted and logged for that strategy, and a strategy that keeps failing is
disabled for entries (exits still go out) until `algoctl resume`, in algo-fno/-equity/-options and in
algo-strategy@NAME alike."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from daemons.engine.main import EngineDaemon, EquityEngine, strategy_process
from daemons.runtime.config import ConfigError, load_config
from daemons.runtime.envelope import CONTROL_RESUME, EXECUTION_FILL, MARKETDATA_TICK, Event
from daemons.runtime.metrics import DaemonMetrics
from daemons.strategies import Fill, Signal, Strategy, Tick
from tests.conftest import REPO

PAPER = (REPO / "configs" / "paper.toml").read_text()


class Failing(Strategy):
    """Raises while ``failing`` is set; otherwise wants one entry and one exit on every tick."""

    kind = "failing"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.failing = True
        self.fills: list[Fill] = []

    def on_tick(self, tick: Tick) -> list[Signal]:
        if self.failing:
            raise ZeroDivisionError("float division by zero")
        return [self.signal(tick.symbol, "BUY", 1, "entry", entry=True),
                self.signal(tick.symbol, "SELL", 1, "exit", entry=False)]

    def on_fill(self, fill: Fill) -> None:
        raise KeyError("no such leg")


class Steady(Strategy):
    """An entry signal on every tick, and it records its fills."""

    kind = "steady"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ticks = 0

    def on_tick(self, tick: Tick) -> list[Signal]:
        self.ticks += 1
        return [self.signal(tick.symbol, "BUY", 1, "steady", entry=True)]


def tick_event(n: int, symbol: str = "INFY") -> Event:
    payload: dict[str, Any] = {"token": 1, "symbol": symbol, "last_price": 100.0 + n, "bid": 99.9, "ask": 100.1,
                               "volume": 10, "oi": 0, "exchange_ts": 1_763_610_300_000_000_000 + n, "type": "EQ",
                               "underlying": "", "strike": 0.0, "expiry": None}
    return Event(MARKETDATA_TICK, "marketdata", n, payload, f"tick-{n}", n, f"tick-{n}")


def sample(engine: EngineDaemon, metric: str, strategy: str) -> float | None:
    return engine.metrics.registry.get_sample_value(metric, {"strategy": strategy})


def equity_limits(limit: int, window: float = 60.0) -> str:
    return PAPER.replace("[daemons.equity]\n", f"[daemons.equity]\nstrategy_error_limit = {limit}\n"
                         f"strategy_error_window_sec = {window}\n")


def engine_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str = PAPER,
                cls: type[EngineDaemon] = EquityEngine) -> EngineDaemon:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    engine = cls(load_config(path), DaemonMetrics(cls.name))
    # the failing strategy first: before the fix its exception skipped every strategy after it
    engine.strategies = {"failing": Failing("failing"), **engine.strategies, "steady": Steady("steady")}
    engine.counts.update(failing=0, steady=0)
    return engine


def test_a_raising_strategy_does_not_keep_the_tick_from_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    engine = engine_with(tmp_path, monkeypatch)
    caplog.set_level(logging.INFO, "algo.engine")
    engine._on_tick(tick_event(1))
    steady = engine.strategies["steady"]
    assert isinstance(steady, Steady) and steady.ticks == 1
    assert sample(engine, "algo_engine_signals_total", "steady") == 1
    assert engine.counts["steady"] == 1 and engine.counts["failing"] == 0
    assert sample(engine, "algo_engine_strategy_errors_total", "failing") == 1
    assert sample(engine, "algo_engine_strategy_errors_total", "rsi-infy") == 0  # exported from the start
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    line = errors[0]
    assert line.getMessage().startswith("failing raised in on_tick: ZeroDivisionError: float division by zero at ")
    assert "\n" not in line.getMessage() and line.exc_info is None  # one journal line, not a traceback
    assert [getattr(line, f) for f in ("STRATEGY", "ENGINE", "TRACE_ID")] == ["failing", "equity", "tick-1"]


def test_a_raising_on_fill_still_books_the_fill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = engine_with(tmp_path, monkeypatch)
    fill = {"strategy": "failing", "fill_id": "f1", "symbol": "INFY", "side": "BUY", "quantity": 3, "price": 101.0}
    engine._on_fill(Event(EXECUTION_FILL, "execution", 1, fill, "e1", 1, "t1"))
    assert engine.book.positions[("failing", "INFY")].quantity == 3
    assert sample(engine, "algo_engine_strategy_errors_total", "failing") == 1
    assert "f1" in engine.seen_fills


@pytest.mark.parametrize("own_process", [False, True], ids=["engine", "strategy-process"])
def test_a_strategy_that_keeps_failing_is_disabled_for_entries_but_exits_go_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, own_process: bool) -> None:
    text = equity_limits(3)
    cls: type[EngineDaemon] = EquityEngine
    if own_process:
        text = text.replace('name = "rsi-infy"\n', 'name = "rsi-infy"\nprocess = "own"\nmetrics_port = 9490\n')
        cls = strategy_process("rsi-infy")
    caplog.set_level(logging.INFO, "algo.engine")
    engine = engine_with(tmp_path, monkeypatch, text, cls)
    failing = engine.strategies["failing"]
    assert isinstance(failing, Failing)
    for n in range(1, 3):
        engine._on_tick(tick_event(n))
    assert "DISABLED" not in engine.status()
    engine._on_tick(tick_event(3))  # the third error within the window
    assert sample(engine, "algo_engine_strategy_errors_total", "failing") == 3
    assert sample(engine, "algo_engine_strategy_disabled", "failing") == 1
    assert "DISABLED after errors: failing" in engine.status()
    assert any(r.levelno == logging.ERROR and "failing DISABLED for entries after 3 errors within 60s"
               in r.getMessage() for r in caplog.records)

    failing.failing = False
    caplog.clear()
    engine._on_tick(tick_event(4))
    published = [r.getMessage() for r in caplog.records if getattr(r, "STRATEGY", None) == "failing"]
    assert published == ["SELL 1 INFY: exit"]  # the exit went out, the entry did not
    assert engine.counts["failing"] == 1
    assert sample(engine, "algo_engine_signals_total", "steady") == 4  # the others never stopped

    # a restart keeps it disabled (checkpointed) ...
    engine.save()
    again = engine_with(tmp_path, monkeypatch, text, cls)
    again._restore(orjson.loads((tmp_path / "checkpoint.json").read_bytes()))
    assert "DISABLED after errors: failing" in again.status()
    # ... until `algoctl resume failing`
    resume = Event(CONTROL_RESUME, "algoctl", 1, {"engine": again.engine, "strategy": "failing"}, "c1", 1, "c1")
    again._on_control(resume)
    assert "DISABLED" not in again.status()
    assert sample(again, "algo_engine_strategy_disabled", "failing") == 0
    replacement = again.strategies["failing"]
    assert isinstance(replacement, Failing)
    replacement.failing = False
    caplog.clear()
    again._on_tick(tick_event(5))
    assert [r.getMessage() for r in caplog.records if getattr(r, "STRATEGY", None) == "failing"] == [
        "BUY 1 INFY: entry", "SELL 1 INFY: exit"]


def test_errors_outside_the_window_do_not_add_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = equity_limits(2, 0.05)
    engine = engine_with(tmp_path, monkeypatch, text)
    engine._on_tick(tick_event(1))
    time.sleep(0.1)
    engine._on_tick(tick_event(2))
    assert sample(engine, "algo_engine_strategy_errors_total", "failing") == 2
    assert not engine.guard.disabled and "DISABLED" not in engine.status()


@pytest.mark.parametrize(("key", "value"), [("strategy_error_limit", "0"), ("strategy_error_window_sec", "-1.0"),
                                            ("strategy_error_limit", '"five"')])
def test_the_error_limit_is_validated(tmp_path: Path, key: str, value: str) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(PAPER.replace(f"{key} = ", f"{key} = {value} #", 1))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert [p.path for p in err.value.problems] == [f"daemons.fno.{key}"]


class Unrestorable(Steady):
    kind = "unrestorable"

    def _load(self, state: dict[str, Any]) -> None:
        raise ValueError("state from an older version")


def test_a_strategy_whose_state_cannot_be_restored_is_disabled_the_others_restored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = engine_with(tmp_path, monkeypatch)
    engine.strategies["steady"] = Unrestorable("steady")
    rsi = {**engine.strategies["rsi-infy"].snapshot(), "position": {"INFY": 10}}
    saved = {"strategies": {"steady": {"position": {"INFY": 5}}, "rsi-infy": rsi}}
    engine._restore(saved)
    assert engine.strategies["rsi-infy"].position == {"INFY": 10}
    assert "(DISABLED after errors: steady)" in engine.status()
    assert sample(engine, "algo_engine_strategy_errors_total", "steady") == 1
    engine.save()
    assert orjson.loads((tmp_path / "checkpoint.json").read_bytes())["disabled"] == ["steady"]


class Impostor(Steady):
    kind = "impostor"

    def on_tick(self, tick: Tick) -> list[Signal]:
        return [Signal("rsi-infy", tick.symbol, "BUY", 1, "MARKET", None, "not mine", True)]


def test_a_strategy_returning_what_is_not_its_signal_is_an_error_of_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = engine_with(tmp_path, monkeypatch)
    engine.strategies["steady"] = Impostor("steady")
    engine._on_tick(tick_event(1))
    assert sample(engine, "algo_engine_strategy_errors_total", "steady") == 1
    assert engine.counts["steady"] == 0 and sample(engine, "algo_engine_signals_total", "rsi-infy") == 0


def test_a_strategy_gets_only_the_ticks_it_watches_and_one_that_watches_nothing_gets_all(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """rsi-infy watches INFY: a tick of another instrument never reaches it but still marks the book;
    a strategy without ``watches`` sees every tick."""
    engine = engine_with(tmp_path, monkeypatch)
    rsi = engine.strategies["rsi-infy"]
    assert rsi.watches() == frozenset({"INFY"})
    seen: list[str] = []

    def on_tick(tick: Tick) -> list[Signal]:
        seen.append(tick.symbol)
        return []

    monkeypatch.setattr(rsi, "on_tick", on_tick)
    engine.strategies = {"rsi-infy": rsi, "steady": Steady("steady")}
    engine._on_tick(tick_event(1, "SYN01234"))
    engine._on_tick(tick_event(2, "INFY"))
    steady = engine.strategies["steady"]
    assert isinstance(steady, Steady) and steady.ticks == 2
    assert seen == ["INFY"]
    assert engine.book.marks["SYN01234"] == 101.0
    assert engine.cpu_ns["rsi-infy"] > 0 and engine.cpu_ns["steady"] > 0
