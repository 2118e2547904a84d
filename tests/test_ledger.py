"""The order ledger's transition table: every allowed change accepted, illegal ones refused,
logged, counted and harmless, live and when the write-ahead log is replayed."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from daemons.execution.broker_types import CANCELLED, COMPLETE, FINAL, OPEN, REJECTED, BrokerOrder, Trade
from daemons.execution.ledger import STATUSES, TRANSITIONS, Ledger
from daemons.execution.orders import NEW, Order
from daemons.runtime.wal import RecordLog


def counter() -> Counter:
    return Counter("algo_execution_illegal_transitions", "test", registry=CollectorRegistry())


def order(cid: str = "C1", quantity: int = 10) -> Order:
    return Order(cid, "s1", "equity", "rsi-infy", "INFY", "BUY", quantity, "MARKET", None, "EQ", "NSE", "t1", 0)


def at_broker(status: str = OPEN, cid: str = "C1") -> BrokerOrder:
    return BrokerOrder("B1", cid, "INFY", "BUY", 10, "MARKET", None, 0, status=status, reason="why")


def trade(n: int, quantity: int) -> Trade:
    return Trade(f"B1-{n}", "B1", "C1", "INFY", "BUY", quantity, 100.0, n)


def ledger_with(tmp_path: Path, status: str) -> tuple[Ledger, Order]:
    """A ledger holding one order brought to ``status`` the legal way."""
    ledger = Ledger(tmp_path / "orders.wal", fsync=False, illegal=counter())
    o = order()
    ledger.add(o)
    if status != NEW:
        assert ledger.answer(o, at_broker(REJECTED if status == REJECTED else OPEN))
    if status == COMPLETE:
        assert ledger.fill(o, trade(1, 10)) is not None
    if status == CANCELLED:
        assert ledger.close(o, CANCELLED, "end of day")
    assert o.status == status
    return ledger, o


def happen(ledger: Ledger, o: Order, event: str) -> bool:
    """Make ``event`` happen to the order through the ledger's API."""
    if event == "placed":
        return ledger.answer(o, at_broker(OPEN))
    if event == "rejected":
        return ledger.answer(o, at_broker(REJECTED)) if o.status == NEW else ledger.close(o, REJECTED, "RMS")
    if event == "cancelled":
        return ledger.close(o, CANCELLED, "by the broker")
    return ledger.fill(o, trade(7, 4 if event == "partly_filled" else o.quantity - o.filled)) is not None


@pytest.mark.parametrize("before, event", sorted(TRANSITIONS))
def test_every_allowed_transition_is_taken_and_logged(tmp_path: Path, before: str, event: str) -> None:
    ledger, o = ledger_with(tmp_path, before)
    assert happen(ledger, o, event)
    assert o.status == TRANSITIONS[before, event]
    assert ledger.illegal._value.get() == 0
    ledger.close_file()
    again = Ledger(tmp_path / "orders.wal", fsync=False, illegal=counter())  # the replay agrees
    assert again.orders["C1"] == o


def test_the_table_knows_every_status_and_final_ones_lead_nowhere() -> None:
    assert {s for s, _ in TRANSITIONS} | set(TRANSITIONS.values()) == set(STATUSES)
    assert not [key for key in TRANSITIONS if key[0] in FINAL]


@pytest.mark.parametrize("before, event", [
    (NEW, "partly_filled"), (NEW, "filled"), (NEW, "cancelled"), (OPEN, "placed"), (COMPLETE, "cancelled"),
    (COMPLETE, "partly_filled"), (REJECTED, "placed"), (REJECTED, "filled"), (CANCELLED, "placed"),
    (CANCELLED, "rejected"),
])
def test_an_illegal_transition_is_refused_counted_and_harmless(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                               before: str, event: str) -> None:
    ledger, o = ledger_with(tmp_path, before)
    was = copy.deepcopy(o)
    lines = (tmp_path / "orders.wal").read_bytes().count(b"\n")
    with caplog.at_level(logging.WARNING, logger="algo.execution"):
        assert not happen(ledger, o, event)
    assert o == was, "the order is left as it was"
    assert (tmp_path / "orders.wal").read_bytes().count(b"\n") == lines, "nothing is logged for it"
    assert ledger.illegal._value.get() == 1
    [warning] = [r for r in caplog.records if "not allowed" in r.getMessage()]
    assert warning.__dict__["ORDER_ID"] == "C1" and before in warning.getMessage()


def test_replaying_the_log_goes_through_the_same_table(tmp_path: Path) -> None:
    wal = RecordLog(tmp_path / "orders.wal", fsync=False)
    wal.append(order().intent())
    wal.append({"op": "placed", "client_id": "C1", "order_id": "B1"})
    wal.append({"op": "cancelled", "client_id": "C1", "reason": "by the broker"})
    wal.append({"op": "placed", "client_id": "C1", "order_id": "B2"})  # never written by us: refused
    wal.close()
    ledger = Ledger(tmp_path / "orders.wal", fsync=False, illegal=counter())
    o = ledger.orders["C1"]
    assert (o.status, o.order_id, o.reason) == (CANCELLED, "B1", "by the broker")
    assert ledger.illegal._value.get() == 1


def test_a_fill_reported_twice_is_one_fill(tmp_path: Path) -> None:
    ledger, o = ledger_with(tmp_path, OPEN)
    assert ledger.fill(o, trade(1, 4)) is not None
    assert ledger.fill(o, trade(1, 4)) is None
    assert (o.filled, o.status, ledger.illegal._value.get()) == (4, OPEN, 0)
