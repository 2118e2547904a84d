"""A compressed paper session of the whole fleet under systemd (tests/systemd/conftest.py's, shared with
test_portfolios.py): every engine trades, every signal gets a risk decision, orders and fills agree
across the broker, the write-ahead log and the journal, the EOD report adds up, `algoctl trace` follows
a fill, the recorded day feeds a replay the same ticks in each form it can be kept in (as the journal
wrote it, compacted, and as days before market.zst were written), and replaying it produces the same
orders."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from daemons.algoctl.sandbox import Sandbox
from daemons.journal.retention import compact_day
from daemons.journal_format import reader
from daemons.journal_format.layout import EVENTS, MARKET
from daemons.marketdata import replay
from tests.conftest import REPO
from tests.systemd.conftest import paper_config
from tests.systemd.fleet import SESSION_DAY, assert_books_agree, rows, today, wait_session_closed

pytestmark = pytest.mark.systemd


def test_all_three_engines_signal_and_trade(session: dict[str, Any]) -> None:
    for engine in ("fno", "equity", "options"):
        assert any(r["engine"] == engine for r in session["signals"]), f"{engine} never signalled"
        assert any(f["engine"] == engine for f in session["books"]["fills"]), f"{engine} never traded"
    assert "algo-execution.service" in session["status"] and "paper broker:" in session["status"]


def test_every_signal_gets_one_decision_and_every_approval_one_order(session: dict[str, Any]) -> None:
    signals = [r["signal_id"] for r in session["signals"]]
    assert len(signals) == len(set(signals))
    decided = {r["signal_id"]: r["decision"] for r in session["decisions"]}
    assert set(signals) <= set(decided)
    first_rows: dict[str, dict[str, str]] = {}
    for r in session["orders"]:
        first_rows.setdefault(r["client_id"], r)
    assert len(first_rows) == sum(d == "approved" for d in decided.values())
    final = {r["client_id"]: r for r in session["orders"]}  # the last row of a client id is its state
    filled: dict[str, int] = {}
    for f in session["books"]["fills"]:
        filled[f["client_id"]] = filled.get(f["client_id"], 0) + int(f["quantity"])
    for cid, row in final.items():
        assert int(row["filled_quantity"]) == filled.get(cid, 0), cid
        assert row["status"] in ("COMPLETE", "REJECTED"), row


def test_eod_report_totals_equal_the_sum_of_the_fills(session: dict[str, Any]) -> None:
    fills = session["books"]["fills"]
    totals = session["report"]["totals"]
    buy = sum(int(f["quantity"]) * float(f["price"]) for f in fills if f["side"] == "BUY")
    sell = sum(int(f["quantity"]) * float(f["price"]) for f in fills if f["side"] == "SELL")
    assert totals["fills"] == len(fills) > 0
    assert totals["buy_value"] == pytest.approx(buy, abs=0.01)
    assert totals["sell_value"] == pytest.approx(sell, abs=0.01)
    open_value = sum(p["quantity"] * p["mark"] for p in session["report"]["positions"])
    assert totals["gross_pnl"] == pytest.approx(sell - buy + open_value, abs=0.05)
    assert sum(e["gross_pnl"] for e in session["report"]["by_engine"].values()) == pytest.approx(totals["gross_pnl"], abs=0.05)
    assert set(session["report"]["by_engine"]) == {"fno", "equity", "options"}
    assert f"{totals['net_pnl']:,.2f}" in session["markdown"] or f"{totals['net_pnl']:.2f}" in session["markdown"]


def test_trace_follows_a_fill_back_to_its_tick(session: dict[str, Any], tmp_path: Path) -> None:
    box: Sandbox = session["box"]
    fill = session["books"]["fills"][0]
    config = tmp_path / "fleet.toml"
    config.write_text(f'[daemons.journal]\ndirectory = "{box.state / "journal"}"\n')
    out = subprocess.run([sys.prefix + "/bin/algoctl", "trace", fill["client_id"], "--config", str(config)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    topics = [line.split()[4] for line in out.stdout.splitlines()[2:]]
    assert topics[0] == "marketdata.tick"
    for hop in ("strategy.signal", "risk.approved", "execution.order", "execution.fill"):
        assert hop in topics, out.stdout
    assert topics.index("strategy.signal") < topics.index("risk.approved") < topics.index("execution.fill")
    assert fill["fill_id"] in out.stdout


def test_journalctl_order_id_finds_the_order_across_units(session: dict[str, Any]) -> None:
    box: Sandbox = session["box"]
    cid = session["books"]["fills"][0]["client_id"]
    out = subprocess.run(["journalctl", "-D", str(box.journal), f"ORDER_ID={cid}", "-o", "json", "--no-pager"],
                         capture_output=True, text=True, check=True).stdout
    lines = [orjson.loads(line) for line in out.splitlines()]
    messages = [line["MESSAGE"] for line in lines]
    assert any("placed" in m for m in messages) and any(m.startswith("fill ") for m in messages), messages
    assert {line["SYSLOG_IDENTIFIER"] for line in lines} == {"algo-execution"}


FORMS = ("recorded", "compacted", "legacy")


def copy_day(recorded: Path, to: Path, form: str) -> None:
    """The recorded day as the journal wrote it, compacted by algo-journal-retention, or as today's main
    wrote days before market.zst (every event a line of events.jsonl)."""
    to.mkdir(parents=True)
    if form == "legacy":
        to.joinpath(EVENTS).write_bytes(b"".join(orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE)
                                                 for e in reader.events(recorded)))
        return
    for name in (EVENTS, MARKET):
        shutil.copyfile(recorded / name, to / name)
    if form == "compacted":
        before, after = compact_day(to, keep_market=True)
        assert after < before


def test_the_three_forms_of_a_day_feed_a_replay_the_same_ticks(session: dict[str, Any], tmp_path: Path) -> None:
    """What a replay reads is the same whichever form the day is kept in, so the one fleet replay
    below (of the compacted form) stands for all three: the fleet is deterministic given its ticks."""
    recorded = session["box"].state / "journal" / today()
    fed = {}
    for form in FORMS:
        copy_day(recorded, tmp_path / form, form)
        fed[form] = list(replay.ticks(tmp_path / form))
    assert len(fed["recorded"]) >= 52 * 250
    assert fed["compacted"] == fed["recorded"] and fed["legacy"] == fed["recorded"]


def test_replaying_the_recorded_day_produces_the_same_orders(session: dict[str, Any], tmp_path: Path) -> None:
    recorded = session["box"].state / "journal" / today()
    form = "compacted"  # the form a day is kept in after algo-journal-retention
    config = paper_config(**{"feed = \"simulator\"": "feed = \"replay\"\nreplay_from = "
                               f"\"/var/lib/algo/journal/{SESSION_DAY}\""})
    box = Sandbox(tmp_path / "sandbox")
    (tmp_path / "replay.toml").write_text(config)
    box.prepare(tmp_path / "replay.toml")
    copy_day(recorded, box.state / "journal" / SESSION_DAY, form)
    box.start()
    try:
        box.systemctl("start", "algo.target", check=True)
        wait_session_closed(box, timeout=150)
        replayed = rows(box, "orders.csv")
        assert_books_agree(box)
    finally:
        box.stop()

    def orders(rs: list[dict[str, str]]) -> list[tuple[str, ...]]:
        seen: dict[str, tuple[str, ...]] = {}
        for r in rs:
            seen.setdefault(r["client_id"], (r["client_id"], r["strategy"], r["symbol"], r["side"], r["quantity"],
                                             r["order_type"]))
        return sorted(seen.values())

    original = orders(session["orders"])
    assert len(original) > 5
    assert orders(replayed) == original
    # and the same bars and features, to the bit (their envelopes differ: ids, publish times)
    again = bars_and_features(box.state / "journal" / today())
    assert again == bars_and_features(recorded) and len(again) >= 2 * 52 * 250  # 300 steps over 375 minutes


def bars_and_features(day: Path) -> dict[tuple[str, str, int], bytes]:
    """(topic, frame key, bar start) -> the payload as JSON, for marketdata.ohlc and features.bar."""
    out = {}
    for topic in ("marketdata.ohlc", "features.bar"):
        for event in reader.events(day, needle=f'"{topic}"'):
            if event["type"] == topic:
                p = event["payload"]
                out[topic, f'{p["token"]}|{p["symbol"]}', p["start"]] = orjson.dumps(p)
    return out


def operations_commands() -> list[str]:
    text = (REPO / "docs" / "OPERATIONS.md").read_text()
    block = text.split("<!-- ops:begin -->")[1].split("<!-- ops:end -->")[0]
    return [line.strip() for line in block.splitlines() if line.strip().startswith("journalctl ")]


def test_every_journalctl_command_in_operations_md_finds_its_story(session: dict[str, Any]) -> None:
    box: Sandbox = session["box"]
    fill = session["books"]["fills"][0]
    values = {"client_id": fill["client_id"], "trace_id": fill["trace"], "strategy": fill["strategy"],
              "engine": fill["engine"], "symbol": fill["symbol"], "day": today()}
    commands = operations_commands()
    assert len(commands) >= 9
    for command in commands:
        args = shlex.split(re.sub(r"<(\w+)>", lambda m: values[m[1]], command))
        out = subprocess.run(["journalctl", "-D", str(box.journal), "--no-pager", *args[1:]],
                             capture_output=True, text=True)
        assert out.returncode == 0, (command, out.stderr)
        text = out.stdout
        if "--until" in command:  # the session window: entries only if the test ran during NSE hours
            now = datetime.now(UTC).time()
            if (now.hour * 60 + now.minute) not in range(3 * 60 + 45, 10 * 60):
                continue
        assert text.strip() and "-- No entries --" not in text, command
        if "ORDER_ID=" in command:
            assert "placed" in text and "fill " in text
        elif "TRACE_ID=" in command:
            ids = {line.split()[4].split("[")[0] for line in text.splitlines() if not line.startswith("--")}
            assert {"algo-risk", "algo-execution"} <= ids, ids  # one tick's story across units
        elif "-p err" in command:
            assert "KILL SWITCH ENGAGED: end of the test session" in text
        elif "-o json" in command:
            entries = [orjson.loads(line) for line in text.splitlines()]  # the unit's lines and systemd's about it
            assert all("algo-execution.service" in (e.get("_SYSTEMD_UNIT"), e.get("UNIT")) for e in entries)
            assert any(e.get("SYSLOG_IDENTIFIER") == "algo-execution" and e.get("ORDER_ID") for e in entries)
        elif "STRATEGY=" in command:
            assert f"algo-{fill['engine']}[" in text  # the engine hosting it logged its signals
