"""Portfolios in a compressed paper session of the whole fleet under systemd: the equity strategies are
followed by three portfolios (one disabled), so their signals become net orders with an allocation key,
every fill of those is allocated once with units summing to it, the disabled portfolio gets nothing, the
books agree, and the end-of-day report's portfolios add up to the strategies they follow."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.conftest import require_systemd_sandbox
from tests.systemd.fleet import (
    assert_books_agree,
    assert_risk_positions_agree,
    events,
    session_config,
    today,
    wait_session_closed,
)
from tests.systemd.test_paper_session import run_fleet

pytestmark = pytest.mark.systemd

FOLLOWED = ("rsi-infy", "rsi-reliance")
PORTFOLIOS = "".join(f"""
[[portfolios]]
id = "{pid}"
capital = {capital}
strategies = ["rsi-infy", "rsi-reliance"]
risk_fraction = 0.1
max_lots = 400
enabled = {enabled}
""" for pid, capital, enabled in (("acct-a", 1000000.0, "true"), ("acct-b", 2500000.0, "true"),
                                   ("acct-off", 1000000.0, "false")))


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require_systemd_sandbox()
    root = tmp_path_factory.mktemp("portfolios")
    box = run_fleet(root / "sandbox", session_config() + PORTFOLIOS)
    try:
        box.systemctl("start", "algo.target", check=True)
        wait_session_closed(box)
        box.systemctl("start", "algo-eod.service", check=True, timeout=60)
        books = assert_books_agree(box)
        assert_risk_positions_agree(box, books)
        yield {
            "books": books,
            "approved": [e["payload"] for e in events(box, "risk.approved")],
            "allocations": [e["payload"] for e in events(box, "portfolio.allocation")],
            "log": (box.state / "risk" / "portfolios" / f"{today()}.wal").read_bytes(),
            "report": orjson.loads((box.state / "reports" / f"{today()}.json").read_bytes()),
            "markdown": (box.state / "reports" / f"{today()}.md").read_text(),
        }
    finally:
        box.stop()


def test_followed_signals_become_net_orders_and_every_fill_is_allocated_once(session: dict[str, Any]) -> None:
    approved = {a["signal_id"]: a for a in session["approved"] if a["strategy"] in FOLLOWED}
    assert approved, "the equity strategies never traded"
    assert all(a.get("allocation_key") == sid and a["portfolios"] in (1, 2) for sid, a in approved.items())
    assert all("allocation_key" not in a for a in session["approved"] if a["strategy"] not in FOLLOWED)
    fills = [f for f in session["books"]["fills"] if f["strategy"] in FOLLOWED]
    assert fills
    allocations = {a["fill_id"]: a for a in session["allocations"]}
    assert set(allocations) == {f["fill_id"] for f in fills}
    for f in fills:
        a = allocations[f["fill_id"]]
        signed = int(f["quantity"]) if f["side"] == "BUY" else -int(f["quantity"])
        assert sum(a["units"]) == signed and all(u * signed > 0 for u in a["units"])
        assert "acct-off" not in a["portfolios"], "a disabled portfolio takes no entries"
    logged = [orjson.loads(line) for line in session["log"].splitlines()]
    assert logged[0]["op"] == "carry" and logged[0]["ids"] == ["acct-a", "acct-b", "acct-off"]
    assert sorted(r["fill_id"] for r in logged if r["op"] == "fill") == sorted(allocations), "each in the log once"


def test_the_report_has_each_portfolios_pnl_adding_up_to_the_strategies(session: dict[str, Any]) -> None:
    by_portfolio = session["report"]["by_portfolio"]
    assert set(by_portfolio) <= {"acct-a", "acct-b"} and by_portfolio
    strategies = session["report"]["by_strategy"]
    followed = sum(strategies[s]["gross_pnl"] for s in FOLLOWED if s in strategies)
    assert sum(p["gross_pnl"] for p in by_portfolio.values()) == pytest.approx(followed, abs=0.05)
    assert "## By portfolio" in session["markdown"]
