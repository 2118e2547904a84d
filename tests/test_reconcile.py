"""Reconciliation as a pure plan, from hand-built ledgers and broker books: no daemon, no files."""

from __future__ import annotations

from dataclasses import dataclass, field

from daemons.execution.broker_types import CANCELLED, COMPLETE, OPEN, REJECTED, BrokerOrder, Trade
from daemons.execution.orders import NEW, Order
from daemons.execution.reconcile import (
    Adopt,
    Close,
    RecordFills,
    RefuseStale,
    Send,
    UnknownAtBroker,
    outcome,
    reconcile,
    sync,
)

NOW = 1_000 * 10**9
MAX_AGE = 5.0


@dataclass
class Book:
    by_tag: dict[str, BrokerOrder] = field(default_factory=dict)
    trades: list[Trade] = field(default_factory=list)

    def find(self, tag: str) -> BrokerOrder | None:
        return self.by_tag.get(tag)

    def trades_of(self, order_id: str) -> list[Trade]:
        return [t for t in self.trades if t.order_id == order_id]


def order(cid: str, status: str = NEW, age: float = 1.0, filled: int = 0) -> Order:
    o = Order(cid, f"s-{cid}", "equity", "rsi-infy", "INFY", "BUY", 10, "MARKET", None, "EQ", "NSE", "t",
              NOW - int(age * 1e9), status=status, filled=filled)
    o.fills = {f"{cid}-old": {}} if filled else {}
    return o


def broker_order(cid: str, status: str = OPEN, reason: str = "") -> BrokerOrder:
    return BrokerOrder(f"B-{cid}", cid, "INFY", "BUY", 10, "MARKET", None, 0, status=status, reason=reason)


def trade(cid: str, n: int, quantity: int = 5) -> Trade:
    return Trade(f"{cid}-{n}", f"B-{cid}", cid, "INFY", "BUY", quantity, 100.0, n)


def plan_of(orders: list[Order], book: Book) -> list[object]:
    return list(reconcile({o.client_id: o for o in orders}, book, NOW, MAX_AGE))


def test_logged_never_sent_and_fresh_is_sent() -> None:
    assert plan_of([order("A")], Book()) == [Send("A")]


def test_logged_never_sent_and_stale_is_refused() -> None:
    assert plan_of([order("A", age=60)], Book()) == [RefuseStale("A", 60.0)]


def test_an_order_the_broker_has_is_adopted_not_sent() -> None:
    at = broker_order("A")
    assert plan_of([order("A")], Book({"A": at})) == [Adopt("A", at)]


def test_a_rejection_we_never_read_is_adopted_and_nothing_more() -> None:
    at = broker_order("A", REJECTED, "RMS")
    assert plan_of([order("A")], Book({"A": at})) == [Adopt("A", at)]


def test_fills_we_had_not_seen_are_recorded_once() -> None:
    at = broker_order("A")
    book = Book({"A": at}, [trade("A", 1), trade("A", 2), trade("B", 1)])
    o = order("A", OPEN)
    o.fills = {"A-1": {}}
    assert plan_of([o], book) == [RecordFills("A", (trade("A", 2),))]


def test_an_order_the_broker_cancelled_is_closed_after_its_fills() -> None:
    at = broker_order("A", CANCELLED, "by the exchange")
    book = Book({"A": at}, [trade("A", 1)])
    assert plan_of([order("A")], book) == [Adopt("A", at), RecordFills("A", (trade("A", 1),)),
                                          Close("A", CANCELLED, "by the exchange")]


def test_a_fill_that_completes_the_order_leaves_nothing_to_close() -> None:
    at = broker_order("A", REJECTED, "late")
    assert sync(order("A", OPEN, filled=5), at, [trade("A", 1)]) == [RecordFills("A", (trade("A", 1),))]


def test_orders_that_agree_with_the_broker_need_nothing() -> None:
    done = order("A", COMPLETE, filled=10)
    gone = order("B", NEW)
    assert plan_of([done, order("C", CANCELLED)], Book({"A": broker_order("A", COMPLETE)})) == []
    assert plan_of([gone], Book({"B": broker_order("B", OPEN)})) == [Adopt("B", broker_order("B"))]


def test_an_order_of_ours_the_log_does_not_know_is_reported() -> None:
    stray = broker_order("X")
    assert plan_of([], Book({"X": stray})) == [UnknownAtBroker(stray, ())]
    assert plan_of([], Book({"X": stray}, [trade("X", 1)])) == [UnknownAtBroker(stray, (trade("X", 1),))], \
        "with its trades: adopted with them if its approval comes"


def test_the_outcome_counts_what_the_metric_counts() -> None:
    book = Book({"A": broker_order("A"), "X": broker_order("X")}, [trade("A", 1), trade("A", 2)])
    plan = reconcile({o.client_id: o for o in (order("A"), order("B"), order("C", age=60))}, book, NOW, MAX_AGE)
    assert outcome(plan) == {"adopted": 1, "fills_recovered": 2, "sent": 1, "refused_stale": 1, "unknown_at_broker": 1}
