"""Reconciliation as a plan: what the ledger's orders and the broker's book disagree on, and what
to do about it. Pure (no log, no bus, no clock of its own): the daemon carries the plan out.

After a restart (``reconcile``): an order logged but never answered that the broker has is
adopted; one the broker never saw is sent, or refused as stale when its tick is older than
``max_order_age_sec``; fills the broker has and we do not are recorded; an order the broker closed
is closed; an order of ours the log does not know is reported. While running, one order's news
from the broker (``sync``) is planned the same way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .broker_types import CANCELLED, FINAL, REJECTED, BrokerBook, BrokerOrder, Trade
from .ledger import after, fill_event
from .orders import NEW, Order


@dataclass(frozen=True)
class Adopt:
    """The broker has an order we never heard back about: log its answer, do not send it again."""

    client_id: str
    at_broker: BrokerOrder


@dataclass(frozen=True)
class Send:
    """Logged, never reached the broker, still fresh: send it now."""

    client_id: str


@dataclass(frozen=True)
class RefuseStale:
    """Logged, never reached the broker, and too old to send late."""

    client_id: str
    age: float


@dataclass(frozen=True)
class RecordFills:
    """Trades the broker has that the ledger does not."""

    client_id: str
    trades: tuple[Trade, ...]


@dataclass(frozen=True)
class Close:
    """The broker cancelled or rejected an order we had as working."""

    client_id: str
    status: str
    reason: str


@dataclass(frozen=True)
class UnknownAtBroker:
    """An order with a tag of ours that the write-ahead log does not know (a mismatch to look at, or a former
    active execution's order after a takeover), with its trades: adopted with them if its approval comes."""

    at_broker: BrokerOrder
    trades: tuple[Trade, ...] = ()


Action = Adopt | Send | RefuseStale | RecordFills | Close | UnknownAtBroker


def age_of(order: Order, now_ns: int) -> float:
    """Seconds since the tick that caused the order (0 when it carries none)."""
    return (now_ns - order.tick_ts) / 1e9 if order.tick_ts else 0.0


def sync(order: Order, at_broker: BrokerOrder, trades: Sequence[Trade]) -> list[Action]:
    """Bring one order up to the broker's view of it."""
    plan: list[Action] = []
    status: str | None = order.status
    if status == NEW:  # the broker has it; we never read its answer (a crash, a lost reply)
        plan.append(Adopt(order.client_id, at_broker))
        status = after(NEW, "rejected" if at_broker.status == REJECTED else "placed")
    new = tuple(t for t in trades if t.trade_id not in order.fills)
    if new:
        plan.append(RecordFills(order.client_id, new))
        if status is not None:
            status = after(status, fill_event(order.filled + sum(t.quantity for t in new), order.quantity)) or status
    if at_broker.status in (CANCELLED, REJECTED) and status not in FINAL:
        plan.append(Close(order.client_id, at_broker.status, at_broker.reason))
    return plan


def reconcile(orders: Mapping[str, Order], book: BrokerBook, now_ns: int, max_order_age: float) -> list[Action]:
    """The ledger's orders (from the write-ahead log) against the broker's book of the day."""
    plan: list[Action] = []
    for order in orders.values():
        at_broker = book.find(order.client_id)
        if at_broker is None:
            if order.status == NEW:
                age = age_of(order, now_ns)
                plan.append(RefuseStale(order.client_id, age) if age > max_order_age else Send(order.client_id))
            continue
        plan += sync(order, at_broker, book.trades_of(at_broker.order_id))
    plan += [UnknownAtBroker(o, tuple(book.trades_of(o.order_id))) for o in book.by_tag.values() if o.tag not in orders]
    return plan


def outcome(plan: Iterable[Action]) -> Counter[str]:
    """What a restart's plan does, as ``algo_execution_reconciliations_total`` counts it."""
    tally: Counter[str] = Counter()
    for action in plan:
        match action:
            case Adopt():
                tally["adopted"] += 1
            case Send():
                tally["sent"] += 1
            case RefuseStale():
                tally["refused_stale"] += 1
            case RecordFills(trades=trades):
                tally["fills_recovered"] += len(trades)
            case UnknownAtBroker():
                tally["unknown_at_broker"] += 1
    return tally
