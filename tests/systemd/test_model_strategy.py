"""A model strategy under systemd, alone in its algo-strategy@ process with its own MemoryMax= and
CPUQuota=: bars' features -> the shipped example model -> signals that name it -> orders; restarted, it
gets its symbol's recent bars from the feed's cache at once; a bad model file disables that strategy with
one err line and the process keeps running."""

from __future__ import annotations

import shutil

import pytest

from daemons.algoctl.sandbox import Sandbox
from daemons.features.codec import snapshot_bars
from daemons.models.onnx_model import Model
from tests.conftest import REPO
from tests.helpers import wait_until
from tests.systemd.busclient import Listener

pytestmark = pytest.mark.systemd

EXAMPLE = REPO / "configs" / "models" / "example.onnx"
UNIT = "algo-strategy@model-infy.service"


def with_model_strategy(box: Sandbox, model: str) -> None:
    (box.etc / "models").mkdir(exist_ok=True)
    shutil.copy(EXAMPLE, box.etc / "models" / "example.onnx")
    (box.etc / "models" / "bad.onnx").write_bytes(b"\x08\x07not an onnx graph")
    config = box.etc / "fleet.toml"
    text = config.read_text().replace("session_minutes = 10.0", "session_minutes = 1.0").replace(
        "steps_per_second = 2.0", "steps_per_second = 20.0")
    config.write_text(text + (
        '\n[[daemons.equity.strategies]]\nname = "model-infy"\nkind = "model"\nprocess = "own"\nmetrics_port = 9491\n'
        f'params = {{ model = "/etc/algo/models/{model}", symbol = "INFY", quantity = 1, buy_above = 0.5, '
        'sell_below = 0.5 }\n'))


def test_a_model_strategy_in_its_own_process_turns_features_into_orders(sandbox: Sandbox) -> None:
    box = sandbox
    with_model_strategy(box, "example.onnx")
    version = Model.load(EXAMPLE).version
    with Listener(box, "strategy.signal", "execution.order") as listener:
        box.systemctl("start", UNIT, check=True)
        wait_until(lambda: any(ev.type == "execution.order" and ev.payload.get("strategy") == "model-infy"
                               for _, ev in listener.events), 60, "an order of the model strategy")
        signal = next(ev for _, ev in listener.events if ev.type == "strategy.signal"
                      and ev.payload["strategy"] == "model-infy")
    assert signal.payload["model"] == {"path": "/etc/algo/models/example.onnx", "version": version,
                                       "features": Model.load(EXAMPLE).feature_hash}
    assert f"model {version} p_up=" in signal.payload["reason"]
    limits = box.show(UNIT, "MemoryMax", "CPUQuotaPerSecUSec", "ActiveState")
    assert limits == {"MemoryMax": str(512 << 20), "CPUQuotaPerSecUSec": "1s", "ActiveState": "active"}
    logged = box.journalctl("-u", UNIT, "STRATEGY=model-infy", "-o", "cat").stdout
    assert signal.payload["reason"] in logged


def test_a_restarted_model_strategy_gets_its_symbols_history_at_once(sandbox: Sandbox) -> None:
    """The feed keeps history for INFY because a configured strategy reads its bars; the restarted process
    asks for it (features.sync, in its name) and the answer is addressed to it."""
    box = sandbox
    with_model_strategy(box, "example.onnx")
    box.systemctl("start", "algo-bus.service", check=True)  # the broker up, so the listener is on it at once
    with Listener(box, "features.bar", "features.sync", "features.snapshot") as listener:
        listener.wait_connected()  # else the first start's sync may go out before the listener is on the bus
        box.systemctl("start", UNIT, check=True)

        def bars() -> list[int]:
            return [ev.payload["end"] for _, ev in listener.events if ev.type == "features.bar"
                    and ev.payload["symbol"] == "INFY"]

        wait_until(lambda: len(bars()) >= 3, 30, "three bars of INFY")
        restarted = len(listener.events)
        box.systemctl("restart", UNIT, check=True)

        def answers() -> list[dict[str, object]]:
            return [ev.payload for _, ev in listener.events[restarted:] if ev.type == "features.snapshot"]

        wait_until(answers, 20, "the history")
        syncs = [ev for _, ev in listener.events if ev.type == "features.sync"]
        snap = answers()[0]
        seen = bars()
    assert len(syncs) == 2  # one per start (the first may find the cache empty, or the feed not up yet)
    assert {(ev.source, ev.key) for ev in syncs} == {("strategy-model-infy", "strategy-model-infy")}
    assert syncs[-1].payload == {"symbols": ["INFY"]}
    assert snap["to"] == "strategy-model-infy" and snap["symbol"] == "INFY"
    history = [end for end, _ in snapshot_bars(snap)]
    assert len(history) >= 3 and set(history) <= set(seen) and history == sorted(history)  # the bars published


def test_a_bad_model_file_disables_that_strategy_and_the_process_runs_on(sandbox: Sandbox) -> None:
    box = sandbox
    with_model_strategy(box, "bad.onnx")
    box.systemctl("start", UNIT, check=True)
    wait_until(lambda: "DISABLED" in box.show(UNIT, "StatusText")["StatusText"], 20, "the strategy disabled")
    errors = box.journalctl("-u", UNIT, "-p", "err", "-o", "cat").stdout.splitlines()
    assert len(errors) == 1 and errors[0].startswith("model-infy DISABLED for entries: cannot start: /etc/algo/models/"
                                                     "bad.onnx: not a model ONNX Runtime can load")
    assert box.show(UNIT, "ActiveState", "NRestarts") == {"ActiveState": "active", "NRestarts": "0"}
