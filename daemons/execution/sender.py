"""algo-execution's send path: a logged order to the broker, and the broker's answer back into the ledger.

An order goes once what the broker needs of its instrument is known (``instruments.py``: else it waits for the
symbol's first tick), within the order-rate budget (``order_queue.py``), and while it is fresh; right before the
place call come the margin check and, with a lease, the fence. Whatever stops it is logged, closes it REJECTED
with the reason and is told, never silently dropped. The paper broker answers at once; a Kite place call runs
as a task of the desk (``kite_desk.py``) so the loop never waits for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram

from ..runtime.config import ExecutionSection
from ..runtime.instrument import InstrumentFacts
from .broker_types import REJECTED, BrokerOrder
from .day import Day
from .governor import Governor
from .instruments import Instruments
from .margin import PaperMargin, added
from .metrics import BudgetCollector
from .order_queue import OrderQueue
from .orders import NEW, Order
from .outcomes import Outcomes, fields
from .reconcile import age_of
from .refusals import NOT_DURABLE_REFUSAL, PARKED_AT_ROLL, PARKED_STALE, QUEUED_AT_ROLL, TOKEN_HALT

if TYPE_CHECKING:
    from .kite_desk import KiteDesk
    from .lease import Lease

log = logging.getLogger("algo.execution")


class Sender:
    """The day's orders to its broker: the paper book of ``day``, or ``kite`` (both set by the daemon)."""

    def __init__(self, section: ExecutionSection, tell: Outcomes, registry: CollectorRegistry) -> None:
        self.section = section
        self.tell = tell
        self.day: Day | None = None  # none open: a standby, or a state disk that refused today's files
        self.kite: KiteDesk | None = None
        self.lease: Lease | None = None
        self.instruments = Instruments()  # from approvals and the ticks of what this execution trades
        self.margin_model = PaperMargin(section.margin)
        self.governor = Governor(section.orders_per_second, section.orders_per_minute, section.orders_per_day)
        self.queue = OrderQueue(self.governor, self._send)
        registry.register(BudgetCollector(self.governor))
        self.latency = Histogram("algo_execution_tick_to_order_seconds", "From the tick that caused a signal to "
                                 "the order reaching the broker", registry=registry,
                                 buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0))
        self.throttled = Counter("algo_execution_throttled", "Orders held back by the order-rate governor",
                                 registry=registry)
        self.margin_refusals = Counter("algo_execution_margin_refusals", "Orders refused before the send: more "
                                       "margin needed than available", registry=registry)

    @property
    def halted(self) -> str:
        """Why no order may be sent ('' while they may): Kite refused the access token."""
        return self.kite.halted if self.kite is not None else ""

    def unsendable(self, order: Order) -> str:
        """Why a new order may not go to the broker ('' if it may)."""
        if self.halted:
            return TOKEN_HALT
        if self.kite is not None and not order.exchange and order.symbol in self.instruments:
            return f"the exchange of {order.symbol} is unknown (neither the approval nor its ticks say it)"
        age = age_of(order, time.time_ns())
        if age > self.section.max_order_age_sec:
            return f"stale: its tick is {age:.1f}s old (max_order_age_sec {self.section.max_order_age_sec:g}); not sent late"
        if self.governor.day_exhausted():
            return f"the day's order budget ({self.section.orders_per_day}) is used up"
        return ""

    def when_known(self, order: Order) -> None:
        """Sent (or queued for the rate budget) if what the broker needs of its instrument is known: Kite its
        exchange, the paper broker its lot and tick size; else it waits for the symbol's first tick."""
        paper = self.day.paper if self.day is not None else None
        known = order.symbol in self.instruments or (
            bool(order.exchange) if paper is None else order.symbol in paper.instruments)
        if known:
            self._submit(order)
            return
        self.instruments.park(order, time.monotonic())
        log.info("order %s waits for the first tick of %s: the approval did not say its exchange and lot size",
                 order.client_id, order.symbol, extra=fields(order))

    def learn(self, symbol: str, facts: InstrumentFacts) -> None:
        """An instrument's facts, first seen: the paper broker's book keeps them; orders that waited go."""
        if self.day is not None and self.day.paper is not None:
            self.day.paper.know(symbol, facts.lot_size, facts.tick_size)
        for order in self.instruments.learn(symbol, facts):
            if order.status == NEW:
                self._submit(order)

    def expire_parked(self, now: float) -> None:
        """Orders that waited for a first tick longer than max_order_age_sec: refused, never sent late."""
        max_age = self.section.max_order_age_sec
        self._refuse_waiting(self.instruments.expired(now, max_age), PARKED_STALE, age=max_age)

    def end_day(self) -> None:
        """What waited (for a first tick, for the rate budget) is refused, not carried into the next day, whose
        contracts and budget start afresh."""
        self._refuse_waiting(self.instruments.take_parked(), PARKED_AT_ROLL)
        self._refuse_waiting(self.queue.take_all(), QUEUED_AT_ROLL)
        self.instruments = Instruments()  # a new day's contracts may differ (a lot size revised at the roll)
        self.governor.new_day()

    def not_sent(self, order: Order, why: str) -> None:
        assert self.day is not None
        self.day.ledger.close(order, REJECTED, why)
        log.warning("order %s not sent: %s", order.client_id, why, extra=fields(order))
        self.tell.rejected(order)
        self.tell.order(order)

    def _refuse_waiting(self, orders: Sequence[Order], why: str, **details: object) -> None:
        """``why`` may name each one's symbol (and ``details``)."""
        for order in orders:
            if order.status == NEW:
                self.not_sent(order, why.format(symbol=order.symbol, **details))

    def _submit(self, order: Order) -> None:
        """Send now, or queue behind the governor (orders leave in the order they came)."""
        if self.queue.submit(order):
            self.throttled.inc()
            log.info("order %s waits for the order-rate budget (%d waiting)", order.client_id, len(self.queue),
                     extra=fields(order))

    def _send(self, order: Order) -> None:
        assert self.day is not None
        age = age_of(order, time.time_ns())
        if age > self.section.max_order_age_sec:  # it waited for the order-rate budget until it went stale
            self.not_sent(order, f"stale: waited for the order-rate budget until its tick was {age:.1f}s old "
                                 f"(max_order_age_sec {self.section.max_order_age_sec:g}); not sent late")
            return
        if (paper := self.day.paper) is not None:
            if self.section.margin.check and (why := self.margin_model.refusal(order, self.day.ledger.exposure)):
                self._short_of_margin(order, why)
                return
            if self._fenced(order):
                return
            self._placed(order, paper.place(order.client_id, order.symbol, order.side, order.quantity,
                                            order.order_type, order.limit_price, time.time_ns()))
            return
        assert self.kite is not None
        self.kite.send(self._send_live(order, self.kite, self.day), order.client_id)

    async def _send_live(self, order: Order, kite: KiteDesk, day: Day) -> None:
        if self.halted:  # queued behind the governor before the halt
            self.not_sent(order, TOKEN_HALT)
            return
        units = added(order, day.ledger.exposure) if self.section.margin.check else 0
        if units and (why := await kite.margin_refusal(order, units)):
            if why == TOKEN_HALT:
                self.not_sent(order, why)
            else:
                self._short_of_margin(order, why)
            return
        if self._fenced(order):  # after the margin call: right before the place call
            return
        try:
            day.ledger.durable()  # the intent on disk before Kite hears of the order
        except OSError as exc:
            self.not_sent(order, NOT_DURABLE_REFUSAL.format(exc.strerror or exc))
            return
        at_broker = await kite.place(order)
        if at_broker is not None and order.status == NEW:  # an update may have brought it first
            self._placed(order, at_broker)

    def _short_of_margin(self, order: Order, why: str) -> None:
        """Refused before the send for want of margin (margin.py): counted, closed REJECTED with the reason, told."""
        self.margin_refusals.inc()
        self.not_sent(order, why)

    def _fenced(self, order: Order) -> bool:
        """The check right before every place call (with a lease): True, logged and counted, when the lease is not
        surely ours. The order is not rejected: its intent stays NEW in this log and the approval is left to the
        active execution, which gets it again from risk (control.sync at its takeover) and sends it once or
        adopts it by tag; should this one lead again, its reconciliation does the same."""
        if self.lease is None or not (why := self.lease.refusal()):
            return False
        self.lease.refused.inc()
        log.critical("order %s NOT sent: %s (fence %d); left to the active execution", order.client_id, why,
                     self.lease.fence, extra=fields(order))
        return True

    def _placed(self, order: Order, at_broker: BrokerOrder) -> None:
        """The broker's answer to our place call: logged, counted, told."""
        if order.tick_ts:
            self.latency.observe(max(0.0, (time.time_ns() - order.tick_ts) / 1e9))
        assert self.day is not None
        self.day.ledger.answer(order, at_broker)
        if order.status == REJECTED:
            self.tell.rejected(order)
        self.tell.order(order)
        self.tell.answered(order)  # after the event: the fleet does not wait for journald
