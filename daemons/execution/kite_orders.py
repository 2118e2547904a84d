"""Kite's orders and trades in algo-execution's terms: ``broker_types.BrokerOrder`` and ``Trade``.

One normalization serves the order book (``GET /orders``, timestamps already parsed by kiteconnect)
and the ticker's order updates (postback fields, timestamps as strings, status ``UPDATE`` for a
partial fill or a modification), so a polled order and a pushed one compare equal.

Kite's many transitional statuses (``PUT ORDER REQ RECEIVED``, ``VALIDATION PENDING``, ``OPEN
PENDING``, ``MODIFY PENDING``, ``CANCEL PENDING``, ``TRIGGER PENDING``, ``UPDATE``...) all mean the
order is working at the broker, so they become ``OPEN``; only ``COMPLETE``, ``REJECTED`` and
``CANCELLED`` end an order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..runtime.calendar import IST
from .broker_types import CANCELLED, FINAL, OPEN, REJECTED, BrokerOrder, Trade

__all__ = [
    "KiteBook",
    "epoch_ns",
    "order_from_kite",
    "our_tag",
    "split_symbol",
    "status_of",
    "trade_from_kite",
]

log = logging.getLogger("algo.execution")

KITE_TAGS = ("mktp", "autoslice")  # tags Kite adds by itself (docs/KITE.md), never ours


def status_of(kite_status: str | None) -> str:
    """OPEN, COMPLETE, REJECTED or CANCELLED; every status that is not final means working."""
    status = (kite_status or "").upper()
    if status.startswith(CANCELLED):  # also "CANCELLED AMO"
        return CANCELLED
    return status if status in FINAL else OPEN


def our_tag(data: dict[str, Any]) -> str | None:
    """The tag we placed the order with (our client id), or None for an order placed by hand.

    ``tag`` carries it; ``tags`` is a fallback, because Kite appends its own (``mktp`` for market
    protection) and an order we miss by tag could be placed twice after a timeout.
    """
    if data.get("tag"):
        return str(data["tag"])
    for tag in data.get("tags") or ():
        if tag.isalnum() and tag not in KITE_TAGS:
            return str(tag)
    return None


def epoch_ns(value: datetime | str | None) -> int:
    """Kite's times are IST wall clock: naive datetimes (REST, parsed by kiteconnect) or strings (ticker)."""
    if isinstance(value, str):
        try:
            value = datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
        except ValueError:
            return 0
    if not isinstance(value, datetime):
        return 0
    if value.tzinfo is None:
        value = value.replace(tzinfo=IST)
    return int(value.timestamp()) * 1_000_000_000


def split_symbol(symbol: str, exchange: str | None = None) -> tuple[str, str]:
    """``"NSE:INFY"`` or (``"INFY"``, exchange ``"NSE"``) -> ("NSE", "INFY")."""
    if exchange:
        return exchange, symbol
    exch, sep, tradingsymbol = symbol.partition(":")
    if not sep or not exch or not tradingsymbol:
        raise ValueError(f"symbol {symbol!r} needs its exchange: EXCHANGE:TRADINGSYMBOL, or pass exchange=")
    return exch, tradingsymbol


def order_from_kite(data: dict[str, Any]) -> BrokerOrder | None:
    """An order from the order book or an order update; None when it carries no tag of ours."""
    tag = our_tag(data)
    if tag is None:
        return None
    status = status_of(data.get("status"))
    order_type = str(data.get("order_type") or "")
    price = float(data.get("price") or 0)
    return BrokerOrder(
        order_id=str(data["order_id"]), tag=tag, symbol=f"{data['exchange']}:{data['tradingsymbol']}",
        side=str(data["transaction_type"]), quantity=int(data["quantity"]), order_type=order_type,
        price=price if order_type == "LIMIT" and price else None, placed_ns=epoch_ns(data.get("order_timestamp")),
        status=status, filled=int(data.get("filled_quantity") or 0), average=float(data.get("average_price") or 0),
        reason=str(data.get("status_message") or "") if status in (REJECTED, CANCELLED) else "",
    )


def trade_from_kite(data: dict[str, Any], tag: str) -> Trade:
    """A fill from the trade book (Kite's trades carry no tag: the caller knows it from the order)."""
    return Trade(
        trade_id=str(data["trade_id"]), order_id=str(data["order_id"]), tag=tag,
        symbol=f"{data['exchange']}:{data['tradingsymbol']}", side=str(data["transaction_type"]),
        quantity=int(data["quantity"]), price=float(data["average_price"]),
        exchange_ts=epoch_ns(data.get("fill_timestamp") or data.get("exchange_timestamp")),
    )


@dataclass(frozen=True)
class KiteBook:
    """The day's orders that bear a tag, and their trades: what reconciliation compares the
    write-ahead log with. ``find`` and ``trades_of`` answer as ``PaperBroker``'s do."""

    by_tag: dict[str, BrokerOrder]
    trades: list[Trade]

    @classmethod
    def from_kite(cls, orders: Iterable[dict[str, Any]], trades: Iterable[dict[str, Any]]) -> KiteBook:
        by_tag: dict[str, BrokerOrder] = {}
        tags: dict[str, str] = {}  # order id -> tag
        for data in orders:
            order = order_from_kite(data)
            if order is None:
                continue
            tags[order.order_id] = order.tag
            first = by_tag.setdefault(order.tag, order)
            if first is not order:  # Kite does not deduplicate tags: a place retried after a lost reply
                log.error("Kite has two orders tagged %s (%s and %s); the first is taken as the order",
                          order.tag, first.order_id, order.order_id, extra={"ORDER_ID": order.tag})
        ours = [trade_from_kite(t, tags[str(t["order_id"])]) for t in trades if str(t["order_id"]) in tags]
        return cls(by_tag, ours)

    @property
    def orders(self) -> dict[str, BrokerOrder]:
        """By Kite's order id, like ``PaperBroker.orders``."""
        return {o.order_id: o for o in self.by_tag.values()}

    def find(self, tag: str) -> BrokerOrder | None:
        return self.by_tag.get(tag)

    def trades_of(self, order_id: str) -> list[Trade]:
        return [t for t in self.trades if t.order_id == order_id]
