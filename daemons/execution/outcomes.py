"""How algo-execution tells the fleet what became of an order: its events on the bus, its counters, its log lines.

Every step of an order is told one way, wherever it happened (a place call's answer, a broker's update, a
reconciliation, a refusal before the broker): the event first, then the count; a log line that follows a send
waits for the end of the loop turn (``after_turn``), so the fleet never waits for journald.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from ..runtime.client import BusClient
from ..runtime.envelope import EXECUTION_FILL, EXECUTION_ORDER, EXECUTION_REJECT, Event
from ..runtime.logs import after_turn
from .broker_types import CANCELLED, COMPLETE, OPEN, REJECTED, Trade
from .orders import Order

log = logging.getLogger("algo.execution")


def fields(order: Order) -> dict[str, Any]:
    """An order's journald fields: what a person searches its lines by."""
    return {"ENGINE": order.engine, "STRATEGY": order.strategy, "SYMBOL": order.symbol, "ORDER_ID": order.client_id,
            "TRACE_ID": order.trace}


class Outcomes:
    """The orders', fills' and refusals' events, counted, on one bus client."""

    def __init__(self, bus: BusClient, registry: CollectorRegistry) -> None:
        self.bus = bus
        self.orders = Counter("algo_execution_orders", "Order updates by status", ["status"], registry=registry)
        self.fills = Counter("algo_execution_fills", "Fills received from the broker", registry=registry)
        self.rejects = Counter("algo_execution_rejects", "Orders refused (broker or malformed)", registry=registry)
        for status in (OPEN, COMPLETE, REJECTED, CANCELLED):
            self.orders.labels(status)

    def order(self, order: Order, *, count: bool = True) -> None:
        """Its status now (``count`` off: told again, as after a restart, not a new update)."""
        if count:
            self.orders.labels(order.status).inc()
        self.bus.publish(EXECUTION_ORDER, order.event(), key=order.symbol, trace=order.trace)

    def rejected(self, order: Order) -> None:
        self.rejects.inc()
        self.bus.publish(EXECUTION_REJECT, order.event(), key=order.symbol, trace=order.trace)

    def refused(self, event: Event, reason: str, cid: str = "") -> None:
        """An approval refused before the broker: nothing was logged ahead, nothing is sent."""
        self.rejects.inc()
        log.warning("approved order refused: %s", reason, extra={"TRACE_ID": event.trace, "ORDER_ID": cid})
        self.bus.publish(EXECUTION_REJECT, {**event.payload, "client_id": cid, "status": "REJECTED", "reason": reason},
                         trace=event.trace)

    def filled(self, order: Order, trade: Trade, fill: dict[str, Any], *, publish: bool) -> None:
        """A trade the ledger took (the first time it saw its id): counted, logged and (``publish``) told."""
        self.fills.inc()
        log.info("fill %s: %s %d %s at %.2f (%d/%d)", trade.trade_id, order.side, trade.quantity, order.symbol,
                 trade.price, order.filled, order.quantity, extra=fields(order))
        if publish:
            self.fill_again(order, fill)

    def fill_again(self, order: Order, fill: dict[str, Any]) -> None:
        """A fill told before, told again (the day's, after a restart; an engine's, when it asks): not counted,
        subscribers drop what they had by its fill_id."""
        self.bus.publish(EXECUTION_FILL, fill, key=order.symbol, trace=order.trace)

    def answered(self, order: Order) -> None:
        """The broker's answer to a place call, logged once the turn's events are out."""
        what = f"{order.side} {order.quantity} {order.symbol} {order.order_type}"
        if order.status == REJECTED:
            after_turn(log, logging.WARNING, "order %s rejected by the broker: %s: %s", order.client_id, what,
                       order.reason, extra=fields(order))
        else:
            after_turn(log, logging.INFO, "order %s placed: %s (broker order %s)", order.client_id, what,
                       order.order_id, extra=fields(order))
