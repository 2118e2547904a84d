"""What ``reconcile.py`` plans, carried out: the broker's view of an order made the ledger's, then told.

A plan comes from reconciliation at the start of a day (every order of the write-ahead log against the broker's
book), from the broker's news of one order while running (a Kite postback or poll), and from an approval whose
order the broker has already (``adopt``). Each step goes through the ledger, whose table refuses an illegal
status change; the fleet hears of the result here (at a start, everything is published again after the plan,
so nothing is told twice).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from prometheus_client import Counter

from .broker_types import REJECTED, BrokerOrder, Trade
from .day import Day
from .ledger import Ledger
from .orders import Order
from .outcomes import Outcomes, fields
from .reconcile import Action, Adopt, Close, RecordFills, RefuseStale, Send, UnknownAtBroker, sync
from .sender import Sender
from .unclaimed import Unclaimed

log = logging.getLogger("algo.execution")


class Bookkeeper:
    """Carries out plans for the send path's open day (``sender.day``)."""

    def __init__(self, sender: Sender, tell: Outcomes, unclaimed: Unclaimed, reconciled: Counter) -> None:
        self.sender = sender
        self.tell = tell
        self.unclaimed = unclaimed
        self.reconciled = reconciled

    @property
    def day(self) -> Day:
        day = self.sender.day
        assert day is not None, "a plan is carried out only for an open day"
        return day

    @property
    def ledger(self) -> Ledger:
        return self.day.ledger

    def carry_out(self, action: Action, *, restart: bool) -> None:
        """One step of a plan (``restart``: at start, where everything is published after)."""
        if isinstance(action, UnknownAtBroker):
            self.unclaimed.found(action.at_broker, action.trades)
            return
        ledger = self.ledger
        order = ledger.orders[action.client_id]
        match action:
            case Send():
                log.warning("order %s was logged but never sent; sending it now", order.client_id,
                            extra=fields(order))
                self.sender.when_known(order)
            case RefuseStale(age=age):
                log.warning("order %s was logged but never sent, and its tick is %.1fs old; refused, not sent late",
                            order.client_id, age, extra=fields(order))
                ledger.close(order, REJECTED, f"stale: never reached the broker; {age:.1f}s old at restart")
                self.tell.rejected(order)
            case Adopt(at_broker=at_broker):
                if restart:
                    log.warning("order %s reached the broker before the restart (order id %s, %s%s); adopted, not "
                                "sent again", order.client_id, at_broker.order_id, at_broker.status,
                                f": {at_broker.reason}" if at_broker.reason else "", extra=fields(order))
                ledger.answer(order, at_broker)
                if not restart:  # reconciliation tells its adoptions itself
                    self.tell.answered(order)
            case RecordFills(trades=trades):
                for trade in trades:
                    self.record_fill(order, trade, publish=not restart)
            case Close(status=status, reason=reason):
                if ledger.close(order, status, reason):
                    log.warning("order %s %s by the broker: %s", order.client_id, status.lower(), reason,
                                extra=fields(order))

    def sync(self, order: Order, at_broker: BrokerOrder, trades: Sequence[Trade]) -> None:
        """A broker's news of one order while running: carried out, then told."""
        plan = sync(order, at_broker, trades)
        for action in plan:
            self.carry_out(action, restart=False)
        if plan:
            if order.status == REJECTED:
                self.tell.rejected(order)
            self.tell.order(order)

    def adopt(self, order: Order, at_broker: BrokerOrder, reported: dict[str, Trade]) -> None:
        """An approval whose order the broker has by its tag (placed by a former active execution, or one this
        log lost): adopted with the fills the broker has, never sent a second time."""
        log.warning("order %s is at the broker already (order id %s, %s), placed before this execution knew of it; "
                    "adopted, not sent again", order.client_id, at_broker.order_id, at_broker.status,
                    extra=fields(order))
        self.reconciled.labels("adopted").inc()
        # The paper book holds every trade (it filled the order on ticks while it was unknown here); Kite's were kept.
        paper = self.day.paper
        trades = paper.trades_of(at_broker.order_id) if paper is not None else list(reported.values())
        self.sync(order, at_broker, trades)

    def record_fill(self, order: Order, trade: Trade, *, publish: bool) -> bool:
        """A trade into the ledger (once, by its id), counted, logged and (``publish``) told."""
        fill = self.ledger.fill(order, trade)
        if fill is None:
            return False
        self.tell.filled(order, trade, fill, publish=publish)
        return True
