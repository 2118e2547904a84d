"""The broker's orders the write-ahead log does not know (execution/unclaimed.py), without a daemon."""

from __future__ import annotations

import logging

import pytest

from daemons.execution.broker_types import BrokerOrder, Trade
from daemons.execution.unclaimed import Unclaimed


def at_broker(order_id: str, tag: str) -> BrokerOrder:
    return BrokerOrder(order_id, tag, "INFY", "BUY", 10, "MARKET", None, 0, status="OPEN", filled=4)


def trade(trade_id: str, order_id: str, tag: str) -> Trade:
    return Trade(trade_id, order_id, tag, "INFY", "BUY", 2, 1000.0, 1)


@pytest.mark.parametrize(("leased", "level"), [(False, logging.ERROR), (True, logging.WARNING)])
def test_a_stranger_is_logged_once_and_its_trades_are_gathered_until_an_approval_claims_it(
        leased: bool, level: int, caplog: pytest.LogCaptureFixture) -> None:
    unclaimed = Unclaimed(leased=leased)
    caplog.set_level(logging.INFO, "algo.execution")
    unclaimed.found(at_broker("K1", "cid1"), [trade("T1", "K1", "cid1")])
    unclaimed.found(at_broker("K1", "cid1"), [trade("T2", "K1", "cid1")])  # the next poll's news of it
    unclaimed.found(at_broker("K2", ""), [])  # placed outside the fleet: no tag to be claimed by

    lines = [(r.levelno, r.__dict__["ORDER_ID"]) for r in caplog.records]
    assert lines == [(level, "cid1"), (level, "")]  # once per broker order id
    assert "former active" in caplog.records[0].getMessage() if leased else "does not know" in caplog.records[0].getMessage()
    found = unclaimed.claim("cid1")
    assert found is not None and found[0].order_id == "K1" and sorted(found[1]) == ["T1", "T2"]
    assert unclaimed.claim("cid1") is None and not unclaimed.orders and not unclaimed.since  # claimed once


def test_with_the_lease_an_order_no_approval_claims_in_time_is_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    unclaimed = Unclaimed(leased=True)
    unclaimed.found(at_broker("K1", "lost"), [trade("T1", "K1", "lost")])
    unclaimed.found(at_broker("K2", "claimed"), [])
    assert unclaimed.overdue(60.0) == []
    for tag in unclaimed.since:
        unclaimed.since[tag] -= 61.0  # as if a minute went by
    unclaimed.claim("claimed")
    assert unclaimed.overdue(60.0) == ["lost"]
    caplog.clear()
    unclaimed.report(60.0)
    unclaimed.report(60.0)
    assert [r.__dict__["ORDER_ID"] for r in caplog.records] == ["lost"]
    assert "BUY 10 INFY" in caplog.records[0].getMessage() and "4 filled in 1 trades" in caplog.records[0].getMessage()


def test_without_the_lease_nothing_is_ever_overdue() -> None:
    unclaimed = Unclaimed(leased=False)
    unclaimed.found(at_broker("K1", "cid1"), [])
    assert not unclaimed.since and unclaimed.overdue(0.0) == []
