"""The order ledger: the day's orders, their write-ahead log, and the one table of how an order's
status may change. Every change (a live event or a record replayed at start) goes through
``TRANSITIONS``; one it does not allow is refused, logged with the order's id and counted
(``algo_execution_illegal_transitions_total``), and the order stays as it was.

An order's intent is on disk before it exists here (``add`` raises OSError otherwise, and the
order is never sent). What follows a fact in the world (the broker's answer, a fill, a close)
changes the order at once and waits in memory if the disk cannot take it (``backlog.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from ..runtime.wal import RecordLog
from .backlog import BackloggedLog
from .broker_types import CANCELLED, COMPLETE, OPEN, REJECTED, BrokerOrder, Trade
from .margin import Exposure, exposure_of
from .orders import NEW, Order

log = logging.getLogger("algo.execution")

STATUSES = (NEW, OPEN, COMPLETE, REJECTED, CANCELLED)
DISK_FULL = "state disk full: new orders refused until the write-ahead log can be written again (%s)"

# (status, event) -> the status it leads to; anything else is illegal. Final statuses lead nowhere.
TRANSITIONS: Mapping[tuple[str, str], str] = {
    (NEW, "placed"): OPEN,  # the broker accepted it
    (NEW, "rejected"): REJECTED,  # the broker refused it, or we did before sending (stale at restart, token halt)
    (OPEN, "partly_filled"): OPEN,
    (OPEN, "filled"): COMPLETE,
    (OPEN, "rejected"): REJECTED,  # accepted, then refused by the broker's risk checks
    (OPEN, "cancelled"): CANCELLED,  # by the broker, or at the end of the day
}


def fill_event(filled: int, quantity: int) -> str:
    """The event a fill is, given the quantity filled with it."""
    return "filled" if filled >= quantity else "partly_filled"


def after(status: str, event: str) -> str | None:
    """Where ``event`` takes an order in ``status``; None when the table does not allow it."""
    return TRANSITIONS.get((status, event))


def _event(order: Order, record: dict[str, Any]) -> str:
    op = record["op"]
    if op == "fill":
        return fill_event(order.filled + int(record["fill"]["quantity"]), order.quantity)
    if op in ("placed", "rejected", "cancelled"):
        return str(op)
    raise ValueError(f"unknown op {op!r}")


class Ledger:
    def __init__(self, path: Path, *, fsync: bool, illegal: Counter, floor: int = 0) -> None:
        self.log = BackloggedLog(RecordLog(path, fsync=fsync), DISK_FULL, logging.CRITICAL, floor)
        self.illegal = illegal
        self.orders: dict[str, Order] = {}
        self.exposure = Exposure()  # per symbol, kept with every change: the margin check reads it
        self.log.wal.replay(self._replay)

    @property
    def trouble(self) -> str:
        """Why the log cannot be written ("" when it can)."""
        return self.log.trouble

    def _replay(self, record: dict[str, Any]) -> None:
        if record["op"] == "new":
            new = self.orders[record["client_id"]] = Order.from_intent(record)
            self.exposure.count(new)
        elif (order := self.orders.get(record["client_id"])) is not None and not _known_fill(order, record):
            self._change(order, record, write=False)

    def add(self, order: Order) -> None:
        """The order's intent, written before the broker may hear of it (a killed process keeps it) and flushed
        to the disk with the paper broker's book SYNC_AFTER_SEC later, or by ``durable`` before Kite's place
        call; OSError: not taken."""
        self.log.write_now(order.intent())
        self.orders[order.client_id] = order
        self.exposure.count(order)

    def answer(self, order: Order, at_broker: BrokerOrder) -> bool:
        """The broker's answer to a place call: accepted or refused."""
        if at_broker.status == REJECTED:
            return self._change(order, {"op": "rejected", "client_id": order.client_id,
                                        "order_id": at_broker.order_id, "reason": at_broker.reason})
        return self._change(order, {"op": "placed", "client_id": order.client_id, "order_id": at_broker.order_id})

    def fill(self, order: Order, trade: Trade) -> dict[str, Any] | None:
        """A trade of the order: its execution.fill payload, or None (already known, or not allowed)."""
        if trade.trade_id in order.fills:  # reported again (a poll, a restart): nothing new
            return None
        fill = {"fill_id": trade.trade_id, "order_id": trade.order_id, "client_id": order.client_id,
                "engine": order.engine, "strategy": order.strategy, "symbol": order.symbol,
                "instrument_type": order.instrument_type, "side": order.side, "quantity": trade.quantity,
                "price": trade.price, "exchange_ts": trade.exchange_ts, "signal_id": order.signal_id}
        return fill if self._change(order, {"op": "fill", "client_id": order.client_id, "fill": fill}) else None

    def close(self, order: Order, status: str, reason: str) -> bool:
        """Rejected or cancelled, with the reason."""
        return self._change(order, {"op": status.lower(), "client_id": order.client_id, "reason": reason})

    def _change(self, order: Order, record: dict[str, Any], *, write: bool = True) -> bool:
        event = _event(order, record)
        status = after(order.status, event)
        if status is None:
            self.illegal.inc()
            log.warning("order %s: %s is not allowed from %s; refused, the order stays as it was", order.client_id,
                        event, order.status, extra={"ORDER_ID": order.client_id, "SYMBOL": order.symbol,
                                                    "ENGINE": order.engine, "STRATEGY": order.strategy})
            return False
        before = exposure_of(order)
        _apply(order, record)
        order.status = status
        self.exposure.count(order, before)
        if write:
            self.log.append(record)
        return True

    def durable(self) -> None:
        """Every intent so far on the disk now (before Kite hears of one); OSError if the disk refuses."""
        self.log.durable()

    def flush(self) -> bool:
        """Retry what the disk refused; True when nothing waits."""
        return self.log.flush()

    def close_file(self) -> None:
        self.log.close()


def _known_fill(order: Order, record: dict[str, Any]) -> bool:
    return record["op"] == "fill" and record["fill"]["fill_id"] in order.fills


def _apply(order: Order, record: dict[str, Any]) -> None:
    """A record's facts onto the order (its status is the table's business)."""
    op = record["op"]
    if op == "placed":
        order.order_id = record["order_id"]
    elif op == "fill":
        fill = record["fill"]
        order.fills[fill["fill_id"]] = fill
        order.average = (order.average * order.filled + fill["price"] * fill["quantity"]) / (
            order.filled + fill["quantity"])
        order.filled += fill["quantity"]
    else:
        order.reason = record["reason"]
        order.order_id = record.get("order_id") or order.order_id
