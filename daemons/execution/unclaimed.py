"""Orders at the broker that this execution's write-ahead log does not know.

They carry a tag (a client id) of ours when a former active execution placed them (a takeover with the lease) or
when the log lost the record; without a tag, someone placed them outside the fleet. One is logged once, by its
broker order id. One with a tag is kept with every trade the broker reported of it, so that an approval arriving
for that client id adopts it (``claim``) and is never sent a second time; with the lease, one that no approval
claims within ``max_order_age_sec`` is reported once for a person to look at (its approval is lost, so what it
opened is not in risk's book).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from .broker_types import BrokerOrder, Trade

log = logging.getLogger("algo.execution")


class Unclaimed:
    """The broker's orders the log does not know, by tag, with their trades by id."""

    def __init__(self, *, leased: bool) -> None:
        self.leased = leased  # several executions share the account: a stranger is most likely a former active's
        self.logged: set[str] = set()  # broker order ids already logged
        self.orders: dict[str, tuple[BrokerOrder, dict[str, Trade]]] = {}
        self.since: dict[str, float] = {}  # with the lease: when each tag was first found (monotonic)
        self.reported: set[str] = set()

    def found(self, at_broker: BrokerOrder, trades: Sequence[Trade]) -> None:
        """The broker's newest view of an order the log does not know, and the trades it reported of it (Kite
        reports each trade once, so they are gathered)."""
        if at_broker.tag:
            known = self.orders.get(at_broker.tag, (at_broker, {}))[1]
            known.update((t.trade_id, t) for t in trades)
            self.orders[at_broker.tag] = (at_broker, known)
            if self.leased:  # without a lease the error below tells already (and ReconciliationMismatch pages)
                self.since.setdefault(at_broker.tag, time.monotonic())
        if at_broker.order_id in self.logged:
            return
        self.logged.add(at_broker.order_id)
        fields = {"ORDER_ID": at_broker.tag, "SYMBOL": at_broker.symbol}
        if not self.leased:
            log.error("the broker has order %s (tag %s) that the write-ahead log does not know", at_broker.order_id,
                      at_broker.tag, extra=fields)
        else:  # shared with the executions that held the lease before: theirs, most likely
            log.warning("the broker has order %s (tag %s) that this execution's write-ahead log does not know: placed by "
                        "a former active execution (or outside the fleet); adopted if its approval comes again",
                        at_broker.order_id, at_broker.tag, extra=fields)

    def claim(self, tag: str) -> tuple[BrokerOrder, dict[str, Trade]] | None:
        """The order at the broker with this tag and its trades, if there is one: an approval claims it."""
        self.since.pop(tag, None)
        return self.orders.pop(tag, None)

    def overdue(self, max_age: float) -> list[str]:
        """The tags found more than ``max_age`` seconds ago that no approval claimed (with the lease only)."""
        now = time.monotonic()
        return [tag for tag, since in self.since.items() if now - since > max_age]

    def report(self, max_age: float) -> None:
        """Each overdue order, an error once for a person to look at (the gauge of ``overdue`` pages)."""
        for tag in self.overdue(max_age):
            if tag in self.reported:
                continue
            self.reported.add(tag)
            at_broker, trades = self.orders[tag]
            log.error("order %s (tag %s, %s %d %s, %s, %d filled in %d trades) is at the broker but no approval "
                      "claimed it within %gs: what it opened is not in risk's book; look it up in the Kite "
                      "console and cancel or close it there if it is not wanted", at_broker.order_id, tag, at_broker.side,
                      at_broker.quantity, at_broker.symbol, at_broker.status, at_broker.filled, len(trades),
                      max_age, extra={"ORDER_ID": tag, "SYMBOL": at_broker.symbol})
