"""The engines under systemd: `systemctl start algo-fno` alone brings up the feed it needs,
signals reach the bus with the tick's trace, state survives kill -9, pause blocks entries."""

from __future__ import annotations

import orjson
import pytest

from daemons.algoctl.sandbox import Sandbox
from tests.helpers import wait_until
from tests.systemd.busclient import Listener, publish_once

pytestmark = pytest.mark.systemd

FNO = "algo-fno.service"
FAST = "\n".join([
    "[daemons.marketdata]", "session_minutes = 1.0", "steps_per_second = 20.0",
    "[[daemons.marketdata.derivatives]]", 'underlying = "NIFTY 50"', "lot_size = 75", "step = 50.0",
    "[daemons.fno]", "checkpoint_sec = 0.5",
    "[[daemons.fno.strategies]]", 'name = "ema-fast"', 'kind = "ema_crossover"',
    'params = { underlying = "NIFTY", quantity = 75, fast = 3, slow = 8 }', "",
])


@pytest.fixture
def fast_fleet(sandbox: Sandbox) -> Sandbox:
    (sandbox.etc / "fleet.toml").write_text(FAST)
    return sandbox


def test_fno_alone_pulls_in_its_feed_and_publishes_traced_signals(fast_fleet: Sandbox) -> None:
    box = fast_fleet
    with Listener(box, "strategy.signal", "marketdata.*") as listener:
        box.systemctl("start", FNO, check=True)
        # the feed is ordered after its consumers: it comes up right after the engine
        wait_until(lambda: box.show("algo-marketdata.service", "ActiveState")["ActiveState"] == "active", 20,
                   "the feed fno pulled in")
        for needed in ("algo-risk.service", "algo-execution.service", "algo-journal.service", "algo-premarket.service"):
            assert box.show(needed, "ActiveState")["ActiveState"] == "active", needed
        wait_until(lambda: any(ev.type == "strategy.signal" for _, ev in listener.events), 30, "a signal")
        ticks = {ev.id: ev for _, ev in listener.events if ev.type == "marketdata.tick"}
        signal = next(ev for _, ev in listener.events if ev.type == "strategy.signal")
    p = signal.payload
    assert (p["engine"], p["strategy"], p["side"], p["quantity"]) == ("fno", "ema-fast", p["side"], 75)
    assert p["symbol"].startswith("NIFTY") and p["symbol"].endswith("FUT") and p["entry"] is True
    assert signal.trace in ticks and ticks[signal.trace].payload["symbol"] == p["symbol"]  # caused by that tick
    found = box.journalctl(f"TRACE_ID={signal.trace}", "STRATEGY=ema-fast", "-o", "cat").stdout
    assert p["reason"] in found


def test_state_survives_kill_9_and_pause_blocks_entries(fast_fleet: Sandbox) -> None:
    box = fast_fleet
    box.systemctl("start", FNO, check=True)
    state = box.state / "fno" / "checkpoint.json"
    wait_until(lambda: state.exists() and orjson.loads(state.read_bytes())["strategies"]["ema-fast"]["trend"] != 0,
               30, "a checkpoint with a known trend")
    before = orjson.loads(state.read_bytes())["strategies"]["ema-fast"]
    box.systemctl("kill", "--signal=SIGKILL", FNO, check=True)
    wait_until(lambda: int(box.show(FNO, "NRestarts")["NRestarts"]) >= 1 and
               box.show(FNO, "ActiveState")["ActiveState"] == "active", 20, "the restart")
    log = box.journalctl("-u", FNO, "-o", "cat").stdout
    assert "fno restored 1 strategies and 0 positions from /var/lib/algo/fno/checkpoint.json" in log
    after = orjson.loads(state.read_bytes())["strategies"]["ema-fast"]
    assert after["fast"]["count"] >= before["fast"]["count"]  # continued, not started over
    assert after["symbol"] == before["symbol"]

    publish_once(box, "control.pause", {"engine": "fno", "strategy": "ema-fast"}, trace="pause-1")
    wait_until(lambda: "ema-fast paused" in box.journalctl("-u", FNO, "-o", "cat").stdout, 10, "the pause")
    with Listener(box, "strategy.signal") as listener:
        wait_until(lambda: orjson.loads(state.read_bytes())["paused"] == ["ema-fast"], 5, "a checkpoint of the pause")
        crossings = orjson.loads(state.read_bytes())["strategies"]["ema-fast"]["trend"]
        wait_until(lambda: orjson.loads(state.read_bytes())["strategies"]["ema-fast"]["trend"] != crossings, 40,
                   "a crossing while paused")
        assert not [ev for _, ev in listener.events if ev.payload["entry"]]
