"""algo-execution: ``risk.approved`` orders to the broker, ``execution.order/fill/reject`` back.

This module is the wiring: subscriptions, metrics, the day's lifecycle (``day.py``: its ledger and paper
book) and the paper/Kite split. An approval becomes an order in ``intake.py``; the send path (``sender.py``)
takes it from there to the broker; ``bookkeeper.py`` carries out what reconciliation plans. Every order gets
a deterministic client id (the Kite tag); the ledger (``ledger.py``) writes its intent to the write-ahead log
before it is sent (fdatasync'ed before a Kite place call; with the paper broker, whose book a power cut takes
with it, within 2 ms), and every broker answer after (backlog.py); every status change goes through the
ledger's table of allowed transitions. On start the log is reconciled with the broker's book before READY=1 (``reconcile.py``
plans it, the bookkeeper carries the plan out): orders the broker has are adopted, orders it never saw are
sent, fills we had not heard of are recorded. Then every order state and fill of the day is published again;
subscribers deduplicate by client_id / fill_id, so a crash at any point loses nothing and doubles nothing.
Approvals sent while execution was down are asked for again (``control.sync``, answered by risk); one whose
tick is older than ``max_order_age_sec`` is refused as stale rather than sent late, and so is a logged order
the broker never saw.

Two brokers stand behind the same logic: the paper broker (``paper.py``, fills on our ticks) and
Kite (``broker = "kite"``: ``kite_desk.py``; ``kite_broker.py`` places without blocking the loop, order
updates come from a ticker connection of our own and an order-book poll every ``poll_sec``). Whatever the
source, a broker's view of an order is planned by ``reconcile.sync``: adopt an order we had not
heard back about, record fills we had not seen (by fill id), close what the broker closed. Kite
refusing the access token halts new orders until a login restarts the unit. A full state disk
refuses new orders (their intent cannot be logged) without stopping the daemon; see ``backlog.py``.

With ``[daemons.execution.lease]`` (``lease.py``) one execution per broker account is active across
hosts: the others are ready standbys that open no day and ignore approvals until they hold the lease;
the new active then reconciles with the broker by tag, asks risk for its recent approvals again, and
checks the lease before every send. Losing it, an active steps down: it exits so systemd restarts it
as a standby.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as Tally
from collections.abc import Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge

from ..runtime.calendar import IST
from ..runtime.config import ExecutionSection, FleetConfig
from ..runtime.daemon import Daemon, pause, serve
from ..runtime.envelope import (
    CONTROL_SYNC,
    MARKETDATA_TICK,
    RISK_APPROVED,
    Event,
)
from ..runtime.heartbeat import this_host
from ..runtime.instrument import InstrumentFacts
from ..runtime.metrics import DaemonMetrics
from ..runtime.rehearsal import rehearse
from ..runtime.tick_watch import TickWatch
from .bookkeeper import Bookkeeper
from .broker_types import CANCELLED, OPEN, BrokerBook
from .day import Day
from .intake import Intake
from .ledger import Ledger
from .orders import Order
from .outcomes import Outcomes
from .paper import PaperBroker
from .reconcile import outcome, reconcile
from .refusals import DAY_UNOPENED
from .rehearsal import rehearsal
from .sender import Sender
from .unclaimed import Unclaimed

if TYPE_CHECKING:
    from .kite_broker import OrderUpdate
    from .kite_desk import KiteDesk
    from .lease import Lease

log = logging.getLogger("algo.execution")

class ExecutionDaemon(Daemon):
    """Orders to the paper broker or Kite; fills back; reconciliation before READY."""

    name = "execution"

    def __init__(self, config: FleetConfig, metrics: DaemonMetrics) -> None:
        super().__init__(config, metrics)
        reg = metrics.registry
        self.tell = Outcomes(self.bus, reg)
        self.reconciled = Counter("algo_execution_reconciliations", "Orders reconciled on start by outcome",
                                  ["result"], registry=reg)
        self.open_orders = Gauge("algo_execution_open_orders", "Orders working at the broker", registry=reg)
        self.open_orders.set_function(lambda: sum(o.status == OPEN for o in self.orders.values()))
        for result in ("adopted", "sent", "refused_stale", "fills_recovered", "unknown_at_broker", "former_active"):
            self.reconciled.labels(result)
        self.illegal = Counter("algo_execution_illegal_transitions", "Order status changes the ledger's table "
                               "refused", registry=reg)
        self.backlog = Gauge("algo_execution_wal_backlog", "Records waiting in memory for the state disk",
                             registry=reg)
        self.backlog.set_function(lambda: len(self.ledger.log.pending) if self.ledger is not None else 0)
        self.sender = Sender(self.section, self.tell, reg)
        self.unopened = ""  # why today's files could not be opened at the roll ("" while they are)
        # The broker's orders the log does not know: an approval that arrives again for one adopts it, never sends
        # it a second time (a former active's orders, found at a takeover; an order whose record the log lost)
        self.unclaimed = Unclaimed(leased=self.section.lease is not None)
        self.overdue = Gauge("algo_execution_unclaimed_orders", "Orders at the broker with a tag of ours that no "
                             "approval claimed within max_order_age_sec of being found", registry=reg)
        self.overdue.set_function(lambda: len(self.unclaimed.overdue(self.section.max_order_age_sec)))
        # Only the ticks of the symbols of the day's orders (TickWatch): an approval brings its instrument's facts
        # and price, so the universe's ticks are neither read nor decoded here. With Kite, ticks only tell an
        # instrument's facts: the newest is enough. The paper broker fills on them, so it must see every one of
        # what it trades (a skipped tick could have crossed a limit).
        self.bus.subscribe(MARKETDATA_TICK, self._on_tick, latest_only=self.section.broker == "kite")
        self.watch = TickWatch(self.bus)
        self.keeper = Bookkeeper(self.sender, self.tell, self.unclaimed, self.reconciled)
        self.intake = Intake(self.sender, self.keeper, self.tell, self.unclaimed, self.watch)
        self.bus.subscribe(RISK_APPROVED, self._on_approved)
        self.bus.subscribe(CONTROL_SYNC, self._on_sync)

    @property
    def section(self) -> ExecutionSection:
        return self.config.daemons.execution

    async def setup(self) -> None:
        if self.section.broker == "kite":
            from .kite_desk import KiteDesk  # live only: kiteconnect brings Twisted along

            self.sender.kite = await KiteDesk.open(self.config, self._on_update, self._rate_limited,
                                                   self.metrics.registry)
        if (lease := self.section.lease) is not None:  # a standby until run() holds the lease
            from .lease import Lease  # redis-py only where the account is shared across hosts

            self.sender.lease = Lease.open(lease, this_host(self.config), self.metrics.registry)
            return
        await self._open_day(datetime.now(IST).date())
        if self.kite is not None:  # after reconciliation: updates need the day's orders; the poll has the gap
            self.kite.start_updates()

    @property
    def kite(self) -> KiteDesk | None:
        """broker = "kite": the live desk, set up in setup() and held by the send path."""
        return self.sender.kite

    @property
    def lease(self) -> Lease | None:
        """[daemons.execution.lease]: set up in setup() (its password is a credential), held by the send path."""
        return self.sender.lease

    @property
    def day(self) -> Day | None:
        """The open day (its ledger and paper book), held by the send path."""
        return self.sender.day

    @property
    def ledger(self) -> Ledger | None:
        return self.day.ledger if self.day is not None else None

    @property
    def paper(self) -> PaperBroker | None:
        return self.day.paper if self.day is not None else None

    async def _book(self) -> BrokerBook:
        """The broker's view of the day, for reconciliation."""
        if self.kite is not None:
            return await self.kite.book()
        assert self.paper is not None
        return self.paper

    @property
    def orders(self) -> dict[str, Order]:
        return self.ledger.orders if self.ledger is not None else {}

    async def _open_day(self, day: date) -> None:
        """Today's ledger and book, reconciled; and everything published again for the fleet."""
        self.sender.day = Day.open(day, self.state_path(day.isoformat()), self.section, self.illegal,
                                   paper=self.kite is None)
        book = await self._book()
        self.watch.add(*(o.symbol for o in self.orders.values()), *(o.symbol for o in book.by_tag.values()))
        plan = reconcile(self.orders, book, time.time_ns(), self.section.max_order_age_sec)
        for action in plan:
            self.keeper.carry_out(action, restart=True)
        done = +outcome(plan)
        if self.lease is not None and "unknown_at_broker" in done:  # at a takeover: the former active's, expected
            done["former_active"] = done.pop("unknown_at_broker")
        for result, n in done.items():
            self.reconciled.labels(result).inc(n)
        log.info("%s: %d orders in the write-ahead log, reconciled with the broker's book: %s", day,
                 len(self.orders), ", ".join(f"{k} {v}" for k, v in sorted(done.items())) or "nothing to do")
        for order in self.orders.values():
            self.tell.order(order, count=False)
            for fill in order.fills.values():
                self.tell.fill_again(order, fill)

    async def run(self) -> None:
        if self.lease is None:
            await self._serve()
            return
        if not await self.lease.wait_until_ours(self.stopping):
            return  # asked to stop while standing by
        loop = asyncio.get_running_loop()
        keeper = loop.create_task(self.lease.keep(self.stopping), name="lease")
        leading = loop.create_task(self._lead(self.lease), name="lead")
        await asyncio.wait({keeper, leading}, return_when=asyncio.FIRST_COMPLETED)
        if keeper.done() and not self.stopping.is_set():
            leading.cancel()
            log.critical("execution lease lost: %s; stepping down (exiting, so systemd restarts this execution as a "
                         "standby)", keeper.result())
            return
        keeper.cancel()
        await leading

    async def _lead(self, lease: Lease) -> None:
        """Just acquired: wait until a former holder's lease has surely run out (its last send is then at the
        broker), reconcile the day with the broker by tag, and serve."""
        await pause(self.stopping, max(0.0, lease.usable_from - time.monotonic()))
        if self.stopping.is_set():
            return
        await self._open_day(datetime.now(IST).date())
        if self.kite is not None:
            self.kite.start_updates()
        log.warning("active: holding the execution lease (fence %d); %d orders of the day reconciled", lease.fence,
                    len(self.orders))
        await self._serve()

    async def _serve(self) -> None:
        self.bus.publish(CONTROL_SYNC, {"requester": "execution"})
        next_poll = time.monotonic() + self.section.poll_sec
        every = self.section.rehearse_ms / 1000
        warm = asyncio.create_task(rehearse(rehearsal(self), every, self.stopping, log)) if every else None
        while not self.stopping.is_set():
            wait = min(1.0, max(0.0, next_poll - time.monotonic())) if self.kite else 1.0
            try:
                await asyncio.wait_for(self.stopping.wait(), wait)
            except TimeoutError:
                if self.ledger is not None and self.ledger.trouble:
                    self.ledger.flush()  # what a full disk held back; new orders wait for it
                if self.paper is not None:
                    self.paper.flush()
                self.unclaimed.report(self.section.max_order_age_sec)
                self.sender.expire_parked(time.monotonic())
                today = datetime.now(IST).date()
                if self.day is None or today != self.day.date:
                    await self._roll(today)
                if self.kite is not None and time.monotonic() >= next_poll:
                    await self.kite.poll()
                    next_poll = time.monotonic() + self.section.poll_sec
        if warm is not None:
            warm.cancel()

    async def _roll(self, today: date) -> None:
        """Orders are valid for the day: cancel what is still working, then start the new day's files. A state
        disk that refuses them refuses the day's orders meanwhile (the serving loop tries again every second)."""
        if self.day is not None:
            self._end_day(self.day)
        try:
            await self._open_day(today)
        except OSError as exc:
            if not self.unopened:  # one line per outage
                log.critical(DAY_UNOPENED, today, exc.strerror or exc)
            self.unopened = exc.strerror or str(exc)
            return
        if self.unopened:
            log.info("%s: the day's write-ahead log is open; new orders are taken again", today)
            self.unopened = ""

    def _end_day(self, day: Day) -> None:
        """What was still working or waiting is cancelled, the day's files closed."""
        self.sender.end_day()
        for order in day.orders.values():
            if order.status == OPEN:
                if day.paper is not None:  # Kite ends its DAY orders by itself
                    day.paper.cancel(day.paper.orders[order.order_id], "end of day")
                day.ledger.close(order, CANCELLED, "end of day")
                self.tell.order(order)
        day.close_files()
        self.sender.day = None

    async def drain(self) -> None:
        if self.kite is not None:  # live sends in flight first: their answers belong in the log
            await self.kite.close(timeout=self.section.stop_timeout_sec / 2)
        self._close_files()
        if self.lease is not None:
            await self.lease.hand_over(len(self.kite.sends) if self.kite is not None else 0)

    def _close_files(self) -> None:
        if self.day is not None:
            self.day.close_files()

    def _on_tick(self, event: Event) -> None:
        p = event.payload
        if p["symbol"] not in self.sender.instruments:
            self.sender.learn(p["symbol"], InstrumentFacts.of_tick(p))
        if self.paper is None or (self.lease is not None and self.lease.left() <= 0):
            return  # no paper broker, or its book may be another execution's now (a lapsed lease)
        self.sender.margin_model.mark(p)
        for at_broker, trade in self.paper.on_tick(p, time.time_ns()):
            order = self.orders.get(at_broker.tag)
            if order is not None and self.keeper.record_fill(order, trade, publish=True):
                self.tell.order(order)

    def _on_update(self, update: OrderUpdate) -> None:
        """Kite's news of one of its orders (a postback or the poll), on the loop."""
        order = self.orders.get(update.order.tag)
        if order is None:
            self.unclaimed.found(update.order, update.trades)
            return
        self.keeper.sync(order, update.order, update.trades)

    def _rate_limited(self, delay: float) -> None:
        self.sender.governor.hold(time.monotonic() + delay)

    def _on_approved(self, event: Event) -> None:
        self.intake.take(event, self.unopened)

    def _on_sync(self, event: Event) -> None:
        """A restarted engine asks for its fills of the day (it may have missed some while down)."""
        engine = event.payload.get("engine")
        if not engine or self.ledger is None:  # a standby has no fills to give
            return
        fills = [(o, f) for o in self.orders.values() if o.engine == engine for f in o.fills.values()]
        for order, fill in fills:
            self.tell.fill_again(order, fill)
        log.info("sent %d fills of the day to %s", len(fills), engine, extra={"ENGINE": engine})

    def status(self) -> str:
        by_status = Tally(o.status for o in self.orders.values())
        fills = sum(len(o.fills) for o in self.orders.values())
        waiting = f", {len(self.sender.queue)} waiting for the rate budget" if self.sender.queue else ""
        if parked := self.sender.instruments.waiting:
            waiting += f", {parked} waiting for a first tick of their symbol"
        halted = "HALTED (Kite refused the access token: run `algoctl login`); " if self.sender.halted else ""
        broker = "kite" if self.kite is not None else "paper broker"
        disk = ""
        if self.unopened:
            disk = f"DEGRADED (state disk: today's write-ahead log cannot be opened: {self.unopened}; new orders refused); "
        elif self.ledger is not None and self.ledger.trouble:
            disk = (f"DEGRADED (state disk full: {self.ledger.trouble}; new orders refused, "
                    f"{len(self.ledger.log.pending)} records waiting to be written); ")
        lease = f"{self.lease.status()}; " if self.lease is not None else ""
        return (f"{lease}{disk}{halted}{broker}: {len(self.orders)} orders today ({by_status['OPEN']} open, "
                f"{by_status['COMPLETE']} complete, {by_status['REJECTED']} rejected), {fills} fills{waiting}")


def main(argv: Sequence[str] | None = None) -> None:
    serve(ExecutionDaemon, argv)
