"""Running the paper fleet in a sandbox and reading back what it wrote (journal, WAL, broker book)."""

from __future__ import annotations

import csv
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from daemons.algoctl.sandbox import Sandbox
from daemons.execution.clientid import client_id
from daemons.journal_format import reader
from daemons.journal_format.layout import EVENTS, kind_of
from daemons.runtime.calendar import IST
from daemons.runtime.checkpoint import peek
from tests.conftest import TEST_CONFIG
from tests.helpers import wait_until

SESSION_DAY = "2026-11-20"  # a Friday: a trading day


def session_config(**replace: str) -> str:
    """TEST_CONFIG with a one-minute session on a fixed day and loss limits out of the way.

    5 steps/s leaves 200 ms between a symbol's ticks, far more than the 50 ms paper latency, so an
    order always trades on the tick after the one that caused it: the run is repeatable as long as no
    order fills over several ticks (a signal on one of them would race that tick's fill).
    """
    text = TEST_CONFIG
    edits = {
        "session_minutes = 10.0": "session_minutes = 1.0",
        "steps_per_second = 2.0": "steps_per_second = 5.0",
        "# session_date = 2026-11-23": f"session_date = {SESSION_DAY}",
        "daily_loss_limit = { fno = 20000.0, equity = 10000.0, options = 25000.0 }":
            "daily_loss_limit = { fno = 5000000.0, equity = 5000000.0, options = 5000000.0 }",
        "fleet_daily_loss_limit = 50000.0": "fleet_daily_loss_limit = 9000000.0",
        **replace,
    }
    for old, new in edits.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def today() -> str:
    return datetime.now(IST).date().isoformat()


def rows(box: Sandbox, name: str) -> list[dict[str, str]]:
    with open((box.state / f"journal/{today()}/{name}"), newline="") as f:
        return list(csv.DictReader(f))


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def events(box: Sandbox, topic: str) -> list[dict[str, Any]]:
    """The journal's events of one topic (the order path's by grep: a day at full load is hundreds of megabytes)."""
    day = box.state / f"journal/{today()}"
    if kind_of(topic) == "market":
        return [e for e in reader.events(day, ("market",)) if e["type"] == topic]
    found = subprocess.run(["grep", "-F", f'"type":"{topic}"', str(day / EVENTS)], capture_output=True, check=False)
    assert found.returncode in (0, 1), found.stderr
    return [orjson.loads(line) for line in found.stdout.splitlines()]


def wait_session_closed(box: Sandbox, timeout: float = 150) -> None:
    wait_until(lambda: re.search(r"session closed|finished", box.show("algo-marketdata.service", "StatusText")["StatusText"]),
               timeout, "the session (or its replay) to end", interval=0.5)
    # the last orders trade on the last ticks; then nothing moves
    wait_until(lambda: re.search(r"\((0) open", box.show("algo-execution.service", "StatusText")["StatusText"]),
               20, "no open orders at the paper broker", interval=0.3)


def broker_book(box: Sandbox, paper: Path | None = None) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """The paper broker's own record: final state per order (by tag) and its trades. ``paper``: its directory
    on the host when not execution's state directory (executions sharing a lease share one)."""
    orders: dict[str, dict[str, Any]] = {}
    trades = []
    for r in jsonl((paper or box.state / "execution") / today() / "broker.jsonl"):
        if r["kind"] == "order":
            tag = r["order"]["tag"]
            assert orders.get(tag, r["order"])["order_id"] == r["order"]["order_id"], f"the broker was sent {tag} twice"
            orders[tag] = r["order"]
        elif r["kind"] == "trade":
            trades.append(r["trade"])
    return orders, trades


def wal_state(box: Sandbox) -> tuple[Counter[str], dict[str, int], set[str], set[str]]:
    """(intents per client id, filled quantity per client id, fill ids, intents closed before they were
    sent) from the write-ahead log. The last are orders that waited for the order-rate budget until
    their tick was stale: refused, never sent (a broker's rejection carries its order id)."""
    intents: Counter[str] = Counter()
    filled: dict[str, int] = {}
    fill_ids = set()
    unsent = set()
    for r in jsonl(box.state / f"execution/{today()}/orders.wal"):
        if r["op"] == "new":
            intents[r["client_id"]] += 1
        elif r["op"] == "rejected" and "order_id" not in r:
            unsent.add(r["client_id"])
        elif r["op"] == "fill":
            assert r["fill"]["fill_id"] not in fill_ids, f"fill {r['fill']['fill_id']} recorded twice in the WAL"
            fill_ids.add(r["fill"]["fill_id"])
            filled[r["client_id"]] = filled.get(r["client_id"], 0) + r["fill"]["quantity"]
    return intents, filled, fill_ids, unsent


def net_positions(fills: list[dict[str, Any]], key: str) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for f in fills:
        k = (str(f[key]), str(f["symbol"]))
        out[k] = out.get(k, 0) + (1 if f["side"] == "BUY" else -1) * int(f["quantity"])
    return {k: v for k, v in out.items() if v}


def assert_books_agree(box: Sandbox, paper: Path | None = None) -> dict[str, Any]:
    """Broker book, write-ahead log and journal agree: no order lost, none twice, same fills."""
    broker_orders, trades = broker_book(box, paper)
    intents, filled, wal_fills, unsent = wal_state(box)
    journal_fills = rows(box, "fills.csv")
    approved = {client_id(r["signal_id"]) for r in rows(box, "decisions.csv") if r["decision"] == "approved"}
    refused = {e["payload"]["client_id"] for e in events(box, "execution.reject") if not e["payload"].get("order_id")}

    assert all(n == 1 for n in intents.values()), f"orders logged twice: {[c for c, n in intents.items() if n > 1]}"
    sent = set(intents) - unsent
    assert set(broker_orders) == sent, \
        f"the broker and the WAL know different orders: broker only {set(broker_orders) - sent}, " \
        f"WAL only {sent - set(broker_orders)}"
    assert approved == set(intents) | refused, \
        f"an approved signal became no order ({approved - set(intents) - refused}) " \
        f"or one came from nowhere ({(set(intents) | refused) - approved})"
    for tag, order in broker_orders.items():
        assert order["filled"] == filled.get(tag, 0), f"{tag}: broker filled {order['filled']}, WAL {filled.get(tag)}"
    assert {t["trade_id"] for t in trades} == wal_fills == {r["fill_id"] for r in journal_fills}
    assert len(journal_fills) == len(wal_fills), "a fill appears twice in fills.csv"
    return {"orders": broker_orders, "trades": trades, "fills": journal_fills}


def assert_risk_positions_agree(box: Sandbox, books: dict[str, Any]) -> None:
    """Risk's checkpointed positions (per engine and symbol) are the net of the broker's trades."""
    intents = {r["client_id"]: r for r in jsonl(box.state / f"execution/{today()}/orders.wal") if r["op"] == "new"}
    engine_of = {o["order_id"]: intents[tag]["engine"] for tag, o in books["orders"].items()}
    trades = [{**t, "engine": engine_of[t["order_id"]]} for t in books["trades"]]
    risk = peek(box.state / "risk" / "checkpoint.json")  # checkpoint.json and the fills logged since
    assert risk is not None
    held = {(p["engine"], p["symbol"]): p["quantity"] for p in risk["positions"] if p["quantity"]}
    assert held == net_positions(trades, "engine"), "risk's positions are not the broker's"


def logged(box: Sandbox, unit: str, prefix: str) -> list[dict[str, Any]]:
    """A unit's journald entries whose message starts with `prefix` (structured fields included)."""
    out = box.journalctl("-u", unit, "-o", "json", "--output-fields=MESSAGE,TRACE_ID,ORDER_ID").stdout
    return [e for e in map(orjson.loads, out.splitlines()) if str(e.get("MESSAGE", "")).startswith(prefix)]


def assert_every_logged_approval_answered(box: Sandbox) -> None:
    """Every approval algo-risk logged became a logged intent or a refusal algo-execution logged: the same
    promise as assert_books_agree, told from the daemons' own logs, so an approval lost on the bus (where
    the journal would miss it too) is caught."""
    approved = {e["TRACE_ID"] for e in logged(box, "algo-risk.service", "approved ")}
    refused = {e["TRACE_ID"] for e in logged(box, "algo-execution.service", "approved order refused")}
    intents = {r["trace"] for r in jsonl(box.state / f"execution/{today()}/orders.wal") if r["op"] == "new"}
    lost = approved - intents - refused
    assert not lost, f"approved by risk, never an order nor refused: traces {sorted(lost)[:5]}"


@contextmanager
def small_state_disk(box: Sandbox, daemon: str, mb: int) -> Iterator[Path]:
    """A tmpfs of ``mb`` MiB, small enough to fill, for a daemon's state directory: mounted on the host
    before the sandbox starts (so its mount namespace has it) and owned by the fleet user, as the state
    directory would be. Once the sandbox runs, bind it over /var/lib/algo/<daemon> inside."""
    disk = box.state / daemon
    disk.mkdir()
    uid, gid = box.user_ids()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mb}m,mode=0700,uid={uid},gid={gid}",
                    f"{daemon}-state", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)
