"""Model strategies: an ONNX model reads a bar's features and its prediction becomes a signal that names
the model; a bad model file is a clear error that disables that strategy and no other; a reload loads a
replaced file keeping the position; the shipped example model is what `algoctl model train` makes."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client import generate_latest

from daemons.algoctl.main import main as algoctl
from daemons.engine.main import EngineDaemon, EquityEngine
from daemons.features.cache import FeatureCache
from daemons.features.candles import Bar as CandleBar
from daemons.features.codec import snapshot
from daemons.features.indicators import FEATURES, Indicators, Periods
from daemons.models.onnx_model import Model, ModelError
from daemons.models.train import Dataset, export
from daemons.runtime.config import load_config
from daemons.runtime.envelope import CONTROL_COMMAND, FEATURES_BAR, FEATURES_SNAPSHOT, Event
from daemons.runtime.metrics import DaemonMetrics
from daemons.strategies import FeatureBar, ModelStrategy, build
from tests.conftest import REPO
from tests.helpers import unsent_frames
from tests.systemd.test_metrics_catalogue import catalogue
from tests.test_strategy_isolation import tick_event

PAPER = (REPO / "configs" / "paper.toml").read_text()


def momentum_model(path: Path, weight: float = 1000.0) -> Model:
    """p_up = sigmoid(weight * return): up after a rising bar, down after a falling one."""
    data = Dataset(np.zeros((4, 1)), np.asarray([0.0, 1.0, 0.0, 1.0]), "test")
    export(path, data, ("return",), (np.zeros(1), np.ones(1), np.asarray([weight]), 0.0))
    return Model.load(path)


BARS = itertools.count()


def bar(ret: float | None, symbol: str = "INFY") -> FeatureBar:
    """A bar closing a minute after the one made before it."""
    values: list[float | None] = [None] * len(FEATURES)
    values[FEATURES.index("return")] = ret
    return FeatureBar(1, symbol, 1_763_610_360_000_000_000 + 60_000_000_000 * next(BARS), values)


def test_predictions_become_signals_that_name_the_model(tmp_path: Path) -> None:
    model = momentum_model(tmp_path / "m.onnx")
    strategy = build("model", "m", {"model": str(tmp_path / "m.onnx"), "symbol": "INFY", "quantity": 10,
                                    "allow_short": True})
    assert isinstance(strategy, ModelStrategy)
    strategy.open()
    assert strategy.on_bar(bar(None)) == []  # not warmed up: no prediction
    assert strategy.on_bar(bar(0.01, "TCS")) == []  # another symbol
    (buy,) = strategy.on_bar(bar(0.01))
    assert (buy.side, buy.quantity, buy.entry) == ("BUY", 10, True)
    assert buy.model == {"path": str(tmp_path / "m.onnx"), "version": model.version, "features": model.feature_hash}
    assert f"model {model.version} p_up=1.000" in buy.reason
    strategy.position["INFY"] = 10
    assert strategy.on_bar(bar(0.0)) == []  # p = 0.5: hold
    exit_, short = strategy.on_bar(bar(-0.01))
    assert (exit_.side, exit_.quantity, exit_.entry, short.side, short.quantity) == ("SELL", 10, False, "SELL", 10)
    assert strategy.predictions == 3 and strategy.inference.n == 4  # the one not warmed up is timed, not counted
    assert strategy.on_bar(bar(0.01)._replace(end_ns=0)) == [] and strategy.predictions == 4  # an earlier day replayed


@pytest.mark.parametrize(("content", "error"), [
    (None, "cannot be read"),
    (b"not a model", "not a model ONNX Runtime can load"),
    ("no-features", "must name the features it reads"),
    ("unknown-feature", "unknown: vwap"),
    ("wrong-width", "needs one float input of shape [N, 2]"),
])
def test_a_bad_model_file_is_a_clear_error(tmp_path: Path, content: bytes | str | None, error: str) -> None:
    path = tmp_path / "bad.onnx"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        import onnx

        momentum_model(path)
        proto = onnx.load(str(path))
        meta = {p.key: p for p in proto.metadata_props}
        if content == "no-features":
            meta["features"].value = ""
        elif content == "unknown-feature":
            meta["features"].value = "vwap"
        else:
            meta["features"].value = "return,rsi"
        path.write_bytes(proto.SerializeToString())
    with pytest.raises(ModelError, match=error.replace("[", r"\[")):
        Model.load(path)


def with_model(model: Path) -> str:
    return PAPER + (f'\n[[daemons.equity.strategies]]\nname = "model-infy"\nkind = "model"\n'
                    f'params = {{ model = "{model}", symbol = "INFY", quantity = 5 }}\n')


def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> EngineDaemon:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    (tmp_path / "fleet.toml").write_text(text)
    return EquityEngine(load_config(tmp_path / "fleet.toml"), DaemonMetrics("equity"))


def bar_event(ret: float) -> Event:
    b = bar(ret)
    payload = {"schema": 1, "token": b.token, "symbol": b.symbol, "start": b.end_ns - 60_000_000_000, "end": b.end_ns,
               "v": b.values}
    return Event(FEATURES_BAR, "marketdata", 1, payload, "bar-1", 1, "bar-1")


def test_the_engine_hands_bars_to_a_model_strategy_and_its_signal_names_the_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = momentum_model(tmp_path / "m.onnx")
    eng = engine(tmp_path, monkeypatch, with_model(tmp_path / "m.onnx"))
    import asyncio

    asyncio.run(eng.setup())
    assert eng.reads_bars and "model-infy" not in eng.guard.disabled
    eng._on_bar(bar_event(0.01))
    assert not [f for f in unsent_frames(eng.bus) if f.topic == b"strategy.signal"]  # no tick yet: no price
    eng._on_tick(tick_event(1))
    eng._on_bar(bar_event(0.01))
    (signal,) = [orjson.loads(f.body)["payload"] for f in unsent_frames(eng.bus) if f.topic == b"strategy.signal"]
    assert (signal["strategy"], signal["side"], signal["quantity"], signal["tick_price"]) == ("model-infy", "BUY", 5, 101.0)
    assert signal["model"]["version"] == model.version and signal["signal_id"].startswith("model-infy:")
    scrape = {s.name: s for m in eng.metrics.registry.collect() for s in m.samples if "model" in s.labels.get("strategy", "")}
    assert scrape["algo_model_predictions_total"].value == 1 and scrape["algo_model_inference_seconds_count"].value == 1
    assert scrape["algo_model_info"].labels["version"] == model.version
    exposed = generate_latest(eng.metrics.registry).decode()
    types = {m[1]: m[2] for m in re.finditer(r"^# TYPE (algo_model_\w+) (\S+)$", exposed, re.M)}
    assert types == catalogue("Model strategies")


def test_a_bad_model_disables_that_strategy_alone_and_a_reload_loads_a_replaced_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"\x00garbage")
    caplog.set_level(logging.INFO, "algo.engine")
    eng = engine(tmp_path, monkeypatch, with_model(path))
    import asyncio

    asyncio.run(eng.setup())
    assert eng.guard.disabled == {"model-infy"}  # the rsi strategies run on
    (line,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert line.getMessage().startswith("model-infy DISABLED for entries: cannot start: ")
    assert "not a model ONNX Runtime can load" in line.getMessage() and line.STRATEGY == "model-infy"  # type: ignore[attr-defined]
    first = momentum_model(path)
    strategy = eng.strategies["model-infy"]
    assert isinstance(strategy, ModelStrategy)
    strategy.position["INFY"] = 5
    asyncio.run(eng.reload(load_config(tmp_path / "fleet.toml")))
    assert strategy.model is not None and strategy.model.version == first.version
    second = momentum_model(path, weight=500.0)  # replaced in place: same config, a new version
    asyncio.run(eng.reload(load_config(tmp_path / "fleet.toml")))
    assert eng.strategies["model-infy"] is strategy and strategy.model.version == second.version != first.version
    assert strategy.position == {"INFY": 5}


def history(requester: str, closes: list[float]) -> Event:
    """The feature cache's answer for INFY (one-minute bars closing at ``closes``), as the feed sends it."""
    cache, state = FeatureCache(capacity=8), Indicators(Periods())
    for n, close in enumerate(closes):
        bar = CandleBar("1|INFY|", 1, "INFY", 1_763_610_000_000_000_000 + n * 60_000_000_000, close, 0)
        cache.append(bar, state.update(bar))
    ((key, ring),) = cache.select(["INFY"])
    payload = orjson.loads(orjson.dumps(snapshot(ring, requester, 60)))  # as it travels
    return Event(FEATURES_SNAPSHOT, "marketdata", len(closes), payload, f"snap-{len(closes)}", 1, "sync-1", key)


def signals(eng: EngineDaemon) -> list[dict[str, Any]]:
    return [orjson.loads(f.body)["payload"] for f in unsent_frames(eng.bus) if f.topic == b"strategy.signal"]


def test_a_model_strategy_that_starts_late_or_restarts_decides_on_the_cached_history_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It asks the feature cache for its symbol's recent bars as it starts and decides on the newest at
    its symbol's first tick, instead of waiting for the next bar to close; never twice on one bar."""
    momentum_model(tmp_path / "m.onnx")
    eng = engine(tmp_path, monkeypatch, with_model(tmp_path / "m.onnx"))
    asyncio.run(eng.setup())
    eng.stopping.set()
    asyncio.run(eng.run())  # what it publishes as it starts, then it stops at once
    (sync,) = [f for f in unsent_frames(eng.bus) if f.topic == b"features.sync"]
    assert orjson.loads(sync.body)["payload"] == {"symbols": ["INFY"]} and sync.key == b"equity"
    me = eng.bus.events.source
    eng._on_snapshot(history("someone-else", [100.0, 101.0, 102.0]))
    eng._on_snapshot(history(me, [100.0, 101.0, 102.0]))  # rising: the momentum model says up
    assert signals(eng) == []  # no tick of INFY yet: no price to stamp a signal with
    eng._on_tick(tick_event(1))
    (buy,) = signals(eng)
    assert (buy["strategy"], buy["side"], buy["quantity"], buy["tick_price"]) == ("model-infy", "BUY", 5, 101.0)
    assert buy["tick_exchange_ts"] == 1_763_610_000_000_000_000 + 3 * 60_000_000_000  # the newest bar's close
    eng._on_bar(Event(FEATURES_BAR, "marketdata", 9, {"token": 1, "symbol": "INFY", "end": buy["tick_exchange_ts"],
                                                       "v": [0.01] + [None] * (len(FEATURES) - 1)}, "b-1", 1, "b-1"))
    assert len(signals(eng)) == 1  # the same bar live: decided already
    asyncio.run(eng.drain())
    # Restarted: the bar it decided on is in its checkpoint; one that closed while it was down is new.
    again = engine(tmp_path, monkeypatch, with_model(tmp_path / "m.onnx"))
    asyncio.run(again.setup())
    again._on_tick(tick_event(2))
    again._on_snapshot(history(me, [100.0, 101.0, 102.0]))
    assert signals(again) == []
    again._on_snapshot(history(me, [100.0, 101.0, 102.0, 101.0]))  # falling: flat (it holds no fill yet)
    strategy = again.strategies["model-infy"]
    assert isinstance(strategy, ModelStrategy) and strategy.predictions == 2
    strategy.position["INFY"] = 5
    again._on_snapshot(history(me, [100.0, 101.0, 102.0, 101.0, 100.0]))
    (sell,) = signals(again)
    assert (sell["side"], sell["quantity"], sell["entry"], sell["tick_price"]) == ("SELL", 5, False, 102.0)


def test_neither_a_config_check_nor_an_engine_without_bar_readers_loads_numpy(tmp_path: Path) -> None:
    """Every daemon builds the configured strategies to check its config: the model's numpy (~13 MB of RSS a
    process) is for the process that opens a model or reads history, not for all of them."""
    (tmp_path / "fleet.toml").write_text(with_model(tmp_path / "m.onnx"))
    code = ("import sys; import daemons.engine.main; from daemons.runtime.config import load_config; "
            "load_config(sys.argv[1]); print('numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "fleet.toml")], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_the_shipped_example_model_is_what_the_training_command_makes(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        algoctl(["model", "train", "--simulate", "7", "--out", str(tmp_path / "example.onnx")])
    assert done.value.code == 0
    assert (tmp_path / "example.onnx").read_bytes() == (REPO / "configs" / "models" / "example.onnx").read_bytes()
    assert "features return,rsi,volatility" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        algoctl(["model", "train", "--simulate", "7", "--steps", "3", "--out", str(tmp_path / "tiny.onnx")])
    assert done.value.code == 1 and "too few to train on" in capsys.readouterr().err
    assert not (tmp_path / "tiny.onnx").exists()


def test_a_model_strategy_a_command_starts_asks_for_its_history_at_once(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Started (or rebuilt) by an operator's command, it is as new as at the engine's start: it asks the
    feature cache for its symbol's recent bars instead of waiting for bars to accumulate."""
    momentum_model(tmp_path / "m.onnx")
    eng = engine(tmp_path, monkeypatch, with_model(tmp_path / "m.onnx"))
    asyncio.run(eng.setup())

    def command(command_id: str, verb: str, **args: Any) -> None:
        payload = {"command_id": command_id, "verb": verb, "strategy": "model-infy", "args": args, "actor": "asha",
                   "unit": "algo-equity", "params": None}
        eng._on_control(Event(CONTROL_COMMAND, "commander", 1, payload, f"e-{command_id}", 1, f"t-{command_id}"))

    def syncs() -> int:
        return sum(f.topic == b"features.sync" for f in unsent_frames(eng.bus))

    before = syncs()
    command("c1", "stop")
    assert syncs() == before
    command("c2", "start")
    command("c3", "pause")  # neither built nor started: nothing to ask for
    assert syncs() == before + 1
    command("c4", "update_config", params={"buy_above": 0.6})
    assert syncs() == before + 2
