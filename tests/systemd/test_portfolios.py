"""Portfolios in the compressed paper session of the whole fleet under systemd (tests/systemd/conftest.py,
shared with test_paper_session.py): the equity strategies are followed by three portfolios (one
disabled), so their signals become net orders with an allocation key, every fill of those is allocated
once with units summing to it, the disabled portfolio gets nothing, the books agree, and the end-of-day
report's portfolios add up to the strategies they follow."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.systemd.conftest import FOLLOWED

pytestmark = pytest.mark.systemd


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
    logged = [orjson.loads(line) for line in session["portfolio_log"].splitlines()]
    assert logged[0]["op"] == "carry" and logged[0]["ids"] == ["acct-a", "acct-b", "acct-off"]
    assert sorted(r["fill_id"] for r in logged if r["op"] == "fill") == sorted(allocations), "each in the log once"


def test_the_report_has_each_portfolios_pnl_adding_up_to_the_strategies(session: dict[str, Any]) -> None:
    by_portfolio = session["report"]["by_portfolio"]
    assert set(by_portfolio) <= {"acct-a", "acct-b"} and by_portfolio
    strategies = session["report"]["by_strategy"]
    followed = sum(strategies[s]["gross_pnl"] for s in FOLLOWED if s in strategies)
    assert sum(p["gross_pnl"] for p in by_portfolio.values()) == pytest.approx(followed, abs=0.05)
    assert "## By portfolio" in session["markdown"]
