"""kill -9 in the middle of a session: algo-execution with orders in flight, then algo-fno.
After systemd restarts them, the paper broker's book, the write-ahead log and the journal agree,
no order is lost or sent twice, and every position (broker, risk, engine) is the same."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from daemons.algoctl.sandbox import Sandbox
from daemons.runtime.checkpoint import peek
from tests.helpers import wait_until
from tests.systemd.busclient import Listener
from tests.systemd.fleet import (
    assert_books_agree,
    events,
    net_positions,
    rows,
    session_config,
    wait_session_closed,
)

pytestmark = pytest.mark.systemd

# Orders stay working for a while: they may trade only 300 ms after placement, 20% of the touch at a time.
CONFIG = session_config(**{"latency_ms = 50.0": "latency_ms = 300.0", "liquidity_pct = 100.0": "liquidity_pct = 20.0"})


def restarted(box: Sandbox, unit: str, before: int) -> bool:
    s = box.show(unit, "NRestarts", "ActiveState")
    return int(s["NRestarts"]) > before and s["ActiveState"] == "active"


def open_orders(box: Sandbox) -> int:
    m = re.search(r"\((\d+) open", box.show("algo-execution.service", "StatusText")["StatusText"])
    return int(m[1]) if m else 0


@pytest.fixture
def crash_box(tmp_path: Any) -> Any:
    from tests.conftest import require_systemd_sandbox

    require_systemd_sandbox()
    box = Sandbox(tmp_path / "sandbox")
    (tmp_path / "fleet.toml").write_text(CONFIG)
    box.prepare(tmp_path / "fleet.toml")
    box.start()
    try:
        yield box
    finally:
        box.stop()


def test_kill_9_of_execution_and_fno_mid_session_loses_and_doubles_nothing(crash_box: Sandbox) -> None:
    box = crash_box
    box.systemctl("start", "algo.target", check=True)
    wait_until(lambda: len(rows(box, "fills.csv")) >= 3, 60, "the first fills")

    # Orders in flight: a burst of approvals that execution is still placing and filling when it dies.
    with Listener(box, "risk.approved", ticks_of=frozenset({"INFY"})) as bus:
        wait_until(lambda: "INFY" in bus.last_tick, 10, "a tick of INFY")
        for n in range(6):
            bus.publish("strategy.signal", {
                "engine": "equity", "strategy": "crash-test", "symbol": "INFY", "side": "BUY", "quantity": 40,
                "order_type": "MARKET", "limit_price": None, "reason": "in flight at kill -9", "entry": True,
                "signal_id": f"crash-test:burst:{n}", "tick_ts": 0, **bus.caused_by("INFY")})
        wait_until(lambda: sum(e.type == "risk.approved" for _, e in bus.events) >= 1, 5, "risk to approve")
        box.systemctl("kill", "--signal=SIGKILL", "algo-execution.service", check=True)
    wait_until(lambda: restarted(box, "algo-execution.service", 0), 30, "algo-execution to restart")

    wait_until(lambda: len(rows(box, "fills.csv")) >= 12, 60, "more fills")
    box.systemctl("kill", "--signal=SIGKILL", "algo-fno.service", check=True)
    wait_until(lambda: restarted(box, "algo-fno.service", 0), 30, "algo-fno to restart")

    wait_session_closed(box)
    box.systemctl("stop", "algo.target", check=True, timeout=60)  # engines, then risk and execution: checkpoints final
    # the target's own stop job returns first; the units it takes along (PartOf=) drain as they stop
    wait_until(lambda: all(box.show(unit, "ActiveState")["ActiveState"] in ("inactive", "failed") for unit in
                           ("algo-fno.service", "algo-risk.service", "algo-execution.service")), 60, "the fleet to stop")

    books = assert_books_agree(box)
    burst = [t for t, o in books["orders"].items() if o["symbol"] == "INFY" and o["quantity"] == 40]
    assert len(burst) == 6, "each of the six in-flight approvals became exactly one order"
    recon = [line for line in box.journalctl("-u", "algo-execution.service", "-o", "cat").stdout.splitlines()
             if "reconciled with the broker's book" in line]
    assert len(recon) == 2 and recon[1].split(":")[1].split()[0] != "0", recon  # the restart found the orders
    # In flight indeed: some burst orders traded only after the restart (their first fill event comes from
    # the new process; event ids carry a per-process prefix).
    first_by: dict[str, str] = {}
    for e in events(box, "execution.fill"):
        first_by.setdefault(e["payload"]["fill_id"], e["id"].rsplit("-", 1)[0])
    processes = list(dict.fromkeys(first_by.values()))
    assert len(processes) == 2
    assert any(first_by[t["trade_id"]] == processes[1] for t in books["trades"] if t["tag"] in burst)

    # Positions: the broker's trades are the truth; risk (per engine) and the engine (per strategy) agree.
    tag_of = {o["order_id"]: t for t, o in books["orders"].items()}
    intents = {r["client_id"]: r for r in map(orjson.loads, (box.state / "execution").glob("*/orders.wal").__next__()
                                              .read_bytes().splitlines()) if r["op"] == "new"}
    trades = [{**t, "engine": intents[tag_of[t["order_id"]]]["engine"],
               "strategy": intents[tag_of[t["order_id"]]]["strategy"]} for t in books["trades"]]
    risk = peek(box.state / "risk" / "checkpoint.json")
    assert risk is not None
    risk_positions = {(p["engine"], p["symbol"]): p["quantity"] for p in risk["positions"] if p["quantity"]}
    assert risk_positions == net_positions(trades, "engine")
    fno = peek(box.state / "fno" / "checkpoint.json")  # checkpoint.json and the fills logged since
    assert fno is not None
    engine_positions = {(k, s): q for k, state in fno["strategies"].items() for s, q in state["position"].items() if q}
    assert engine_positions == net_positions([t for t in trades if t["engine"] == "fno"], "strategy")
    assert any(t["engine"] == "fno" for t in trades), "fno traded"
