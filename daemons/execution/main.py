"""algo-execution: ``risk.approved`` orders to the broker, ``execution.order/fill/reject`` back.

Every order gets a deterministic client id (the Kite tag) and is written to the write-ahead
order log, fsynced, before it is sent; every broker answer is logged after. On start the log is
reconciled with the broker's book before READY=1: orders the broker has are adopted, orders it
never saw are sent, fills we had not heard of are recorded. Then every order state and fill of
the day is published again; subscribers deduplicate by client_id / fill_id, so a crash at any
point loses nothing and doubles nothing. Approvals sent while execution was down are asked for
again (``control.sync``, answered by risk); one whose tick is older than ``max_order_age_sec``
is refused as stale rather than sent late.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as Tally
from collections import deque
from datetime import date, datetime
from typing import Any, Iterable, Sequence

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..marketdata.session import IST
from ..runtime.config import ExecutionSection, FleetConfig
from ..runtime.daemon import Daemon, serve
from ..runtime.envelope import (
    CONTROL_SYNC,
    EXECUTION_FILL,
    EXECUTION_ORDER,
    EXECUTION_REJECT,
    MARKETDATA_TICK,
    RISK_APPROVED,
    Event,
)
from ..runtime.metrics import DaemonMetrics
from .clientid import client_id
from .governor import Governor
from .orders import FINAL, NEW, BadOrder, Order
from .paper import CANCELLED, REJECTED, BrokerOrder, PaperBroker, Trade
from .wal import OrderLog

log = logging.getLogger("algo.execution")


class ExecutionDaemon(Daemon):
    """Orders to the paper broker; fills back; reconciliation before READY."""

    name = "execution"

    def __init__(self, config: FleetConfig, metrics: DaemonMetrics) -> None:
        super().__init__(config, metrics)
        reg = metrics.registry
        self.orders_total = Counter("algo_execution_orders", "Order updates by status", ["status"], registry=reg)
        self.fills_total = Counter("algo_execution_fills", "Fills received from the broker", registry=reg)
        self.rejects_total = Counter("algo_execution_rejects", "Orders refused (broker or malformed)", registry=reg)
        self.reconciled = Counter("algo_execution_reconciliations", "Orders reconciled on start by outcome",
                                  ["result"], registry=reg)
        self.latency = Histogram("algo_execution_tick_to_order_seconds", "From the tick that caused a signal to "
                                 "the order reaching the broker", registry=reg,
                                 buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0))
        self.open_orders = Gauge("algo_execution_open_orders", "Orders working at the broker", registry=reg)
        self.open_orders.set_function(lambda: sum(o.status == "OPEN" for o in self.orders.values()))
        for status in ("OPEN", "COMPLETE", "REJECTED", "CANCELLED"):
            self.orders_total.labels(status)
        for result in ("adopted", "sent", "fills_recovered", "unknown_at_broker"):
            self.reconciled.labels(result)
        self.throttled = Counter("algo_execution_throttled", "Orders held back by the order-rate governor",
                                 registry=reg)
        x = self.section
        self.governor = Governor(x.orders_per_second, x.orders_per_minute, x.orders_per_day)
        self.waiting: deque[Order] = deque()  # logged, waiting for the governor
        self.drain_at: asyncio.TimerHandle | None = None
        reg.register(BudgetCollector(self.governor))
        self.orders: dict[str, Order] = {}
        self.types: dict[str, str] = {}  # symbol -> EQ/FUT/CE/PE, from ticks
        self.day: date | None = None
        self.bus.subscribe(MARKETDATA_TICK, self._on_tick)
        self.bus.subscribe(RISK_APPROVED, self._on_approved)
        self.bus.subscribe(CONTROL_SYNC, self._on_sync)

    @property
    def section(self) -> ExecutionSection:
        return self.config.daemons.execution

    async def setup(self) -> None:
        self._open_day(datetime.now(IST).date())

    def _open_day(self, day: date) -> None:
        """Today's log and book, reconciled; and everything published again for the fleet."""
        self.day = day
        folder = self.state_path(day.isoformat())
        self.broker = PaperBroker(folder / "broker.jsonl", self.section, day)
        self.wal = OrderLog(folder / "orders.wal", fsync=self.section.fsync)
        self.orders = {}
        for record in self.wal.records:
            if record["op"] == "new":
                self.orders[record["client_id"]] = Order.from_intent(record)
            elif record["client_id"] in self.orders:
                self.orders[record["client_id"]].apply(record)
        outcome = self._reconcile()
        log.info("%s: %d orders in the write-ahead log, reconciled with the broker's book: %s", day,
                 len(self.orders), ", ".join(f"{k} {v}" for k, v in sorted(outcome.items())) or "nothing to do")
        for order in self.orders.values():
            self._publish_order(order, count=False)
            for fill in order.fills.values():
                self.bus.publish(EXECUTION_FILL, fill, key=order.symbol, trace=order.trace)

    def _reconcile(self) -> Tally[str]:
        outcome: Tally[str] = Tally()
        for order in self.orders.values():
            if order.status == NEW:
                at_broker = self.broker.find(order.client_id)
                if at_broker is None:  # logged, never sent: send it now
                    log.warning("order %s was logged but never sent; sending it now", order.client_id,
                                extra=self._fields(order))
                    self._submit(order)
                    outcome["sent"] += 1
                    continue
                self._adopt(order, at_broker)
                outcome["adopted"] += 1
            if order.order_id:
                missed = [t for t in self.broker.trades_of(order.order_id) if t.trade_id not in order.fills]
                for trade in missed:
                    self._record_fill(order, trade, publish=False)
                if missed:
                    outcome["fills_recovered"] += len(missed)
                at_broker = self.broker.orders[order.order_id]
                if at_broker.status == CANCELLED and order.status not in FINAL:
                    self._close(order, "cancelled", at_broker.reason)
        ours = {o.client_id for o in self.orders.values()}
        for stray in (o for o in self.broker.orders.values() if o.tag not in ours):
            log.error("the broker has order %s (tag %s) that the write-ahead log does not know", stray.order_id,
                      stray.tag, extra={"ORDER_ID": stray.tag, "SYMBOL": stray.symbol})
            outcome["unknown_at_broker"] += 1
        for result, n in outcome.items():
            self.reconciled.labels(result).inc(n)
        return outcome

    def _adopt(self, order: Order, at_broker: BrokerOrder) -> None:
        log.warning("order %s reached the broker before the crash (order id %s); adopted, not sent again",
                    order.client_id, at_broker.order_id, extra=self._fields(order))
        self._answer(order, at_broker)

    def _answer(self, order: Order, at_broker: BrokerOrder) -> None:
        """Log the broker's answer to a place call and apply it."""
        if at_broker.status == REJECTED:
            record = {"op": "rejected", "client_id": order.client_id, "order_id": at_broker.order_id,
                      "reason": at_broker.reason}
        else:
            record = {"op": "placed", "client_id": order.client_id, "order_id": at_broker.order_id}
        self.wal.append(record)
        order.apply(record)

    async def run(self) -> None:
        self.bus.publish(CONTROL_SYNC, {"requester": "execution"})
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(self.stopping.wait(), 1.0)
            except asyncio.TimeoutError:
                today = datetime.now(IST).date()
                if today != self.day:
                    self._roll(today)

    def _roll(self, today: date) -> None:
        """Orders are valid for the day: cancel what is still working, then start the new day's files."""
        for order in self.orders.values():
            if order.status == "OPEN":
                at_broker = self.broker.orders[order.order_id]
                self.broker.cancel(at_broker, "end of day")
                self._close(order, "cancelled", "end of day")
                self._publish_order(order)
        self._close_files()
        self.governor.new_day()
        self._open_day(today)

    async def drain(self) -> None:
        self._close_files()

    def _close_files(self) -> None:
        self.wal.close()
        self.broker.close()

    def _on_tick(self, event: Event) -> None:
        p = event.payload
        self.types[p["symbol"]] = p.get("type", "")
        for at_broker, trade in self.broker.on_tick(p, time.time_ns()):
            order = self.orders.get(at_broker.tag)
            if order is not None:
                self._record_fill(order, trade, publish=True)

    def _on_approved(self, event: Event) -> None:
        p = event.payload
        signal_id = p.get("signal_id")
        if not signal_id:
            self._refuse(event, "approved order without a signal_id (no deterministic client id possible)")
            return
        cid = client_id(str(signal_id))
        if cid in self.orders:  # the same approval delivered twice (a replayed or re-sent event)
            log.info("order %s already known; not sent again", cid, extra={"ORDER_ID": cid, "TRACE_ID": event.trace})
            return
        try:
            order = Order.from_approved(cid, p, self.types.get(str(p.get("symbol")), ""), event.trace)
        except BadOrder as exc:
            self._refuse(event, str(exc))
            return
        age = (time.time_ns() - order.tick_ts) / 1e9 if order.tick_ts else 0.0
        if age > self.section.max_order_age_sec:
            self._refuse(event, f"stale: its tick is {age:.1f}s old (max_order_age_sec "
                                f"{self.section.max_order_age_sec:g}); not sent late", cid)
            return
        if self.governor.day_exhausted():
            self._refuse(event, f"the day's order budget ({self.section.orders_per_day}) is used up", cid)
            return
        self.orders[cid] = order
        self.wal.append(order.intent())  # on disk before the broker hears of it
        self._submit(order)

    def _submit(self, order: Order) -> None:
        """Send now, or queue behind the governor (orders leave in the order they came)."""
        if self.waiting or self.governor.wait(time.monotonic()) > 0:
            self.waiting.append(order)
            self.throttled.inc()
            log.info("order %s waits for the order-rate budget (%d waiting)", order.client_id, len(self.waiting),
                     extra=self._fields(order))
            self._schedule_drain()
            return
        self.governor.take(time.monotonic())
        self._send(order)

    def _schedule_drain(self) -> None:
        if self.drain_at is None:
            delay = self.governor.wait(time.monotonic())
            self.drain_at = asyncio.get_running_loop().call_later(delay, self._drain)

    def _drain(self) -> None:
        self.drain_at = None
        while self.waiting and self.governor.wait(time.monotonic()) == 0:
            self.governor.take(time.monotonic())
            self._send(self.waiting.popleft())
        if self.waiting:
            self._schedule_drain()

    def _send(self, order: Order) -> None:
        at_broker = self.broker.place(order.client_id, order.symbol, order.side, order.quantity, order.order_type,
                                      order.limit_price, time.time_ns())
        if order.tick_ts:
            self.latency.observe(max(0.0, (time.time_ns() - order.tick_ts) / 1e9))
        self._answer(order, at_broker)
        fields = self._fields(order)
        what = f"{order.side} {order.quantity} {order.symbol} {order.order_type}"
        if order.status == REJECTED:
            self.rejects_total.inc()
            log.warning("order %s rejected by the broker: %s: %s", order.client_id, what, order.reason, extra=fields)
            self.bus.publish(EXECUTION_REJECT, order.event(), key=order.symbol, trace=order.trace)
        else:
            log.info("order %s placed: %s (broker order %s)", order.client_id, what, order.order_id, extra=fields)
        self._publish_order(order)

    def _refuse(self, event: Event, reason: str, cid: str = "") -> None:
        """Refused before the broker: nothing is logged ahead, nothing is sent."""
        self.rejects_total.inc()
        log.warning("approved order refused: %s", reason, extra={"TRACE_ID": event.trace, "ORDER_ID": cid})
        self.bus.publish(EXECUTION_REJECT, {**event.payload, "client_id": cid, "status": "REJECTED", "reason": reason},
                         trace=event.trace)

    def _record_fill(self, order: Order, trade: Trade, *, publish: bool) -> None:
        fill = {"fill_id": trade.trade_id, "order_id": trade.order_id, "client_id": order.client_id,
                "engine": order.engine, "strategy": order.strategy, "symbol": order.symbol,
                "instrument_type": order.instrument_type, "side": order.side, "quantity": trade.quantity,
                "price": trade.price, "exchange_ts": trade.exchange_ts, "signal_id": order.signal_id}
        record = {"op": "fill", "client_id": order.client_id, "fill": fill}
        self.wal.append(record)
        order.apply(record)
        self.fills_total.inc()
        log.info("fill %s: %s %d %s at %.2f (%d/%d)", trade.trade_id, order.side, trade.quantity, order.symbol,
                 trade.price, order.filled, order.quantity, extra=self._fields(order))
        if publish:
            self.bus.publish(EXECUTION_FILL, fill, key=order.symbol, trace=order.trace)
            self._publish_order(order)

    def _close(self, order: Order, op: str, reason: str) -> None:
        record = {"op": op, "client_id": order.client_id, "reason": reason}
        self.wal.append(record)
        order.apply(record)

    def _publish_order(self, order: Order, *, count: bool = True) -> None:
        if count:
            self.orders_total.labels(order.status).inc()
        self.bus.publish(EXECUTION_ORDER, order.event(), key=order.symbol, trace=order.trace)

    def _on_sync(self, event: Event) -> None:
        """A restarted engine asks for its fills of the day (it may have missed some while down)."""
        engine = event.payload.get("engine")
        if not engine:
            return
        fills = [(o, f) for o in self.orders.values() if o.engine == engine for f in o.fills.values()]
        for order, fill in fills:
            self.bus.publish(EXECUTION_FILL, fill, key=order.symbol, trace=order.trace)
        log.info("sent %d fills of the day to %s", len(fills), engine, extra={"ENGINE": engine})

    @staticmethod
    def _fields(order: Order) -> dict[str, Any]:
        return {"ENGINE": order.engine, "STRATEGY": order.strategy, "SYMBOL": order.symbol,
                "ORDER_ID": order.client_id, "TRACE_ID": order.trace}

    def status(self) -> str:
        by_status = Tally(o.status for o in self.orders.values())
        fills = sum(len(o.fills) for o in self.orders.values())
        waiting = f", {len(self.waiting)} waiting for the rate budget" if self.waiting else ""
        return (f"paper broker: {len(self.orders)} orders today ({by_status['OPEN']} open, "
                f"{by_status['COMPLETE']} complete, {by_status['REJECTED']} rejected), {fills} fills{waiting}")


class BudgetCollector(Collector):
    def __init__(self, governor: Governor) -> None:
        self.governor = governor

    def collect(self) -> Iterable[GaugeMetricFamily]:
        g = GaugeMetricFamily("algo_execution_order_budget_remaining", "Orders the rate limits still allow",
                              labels=["window"])
        now = time.monotonic()
        for window in ("second", "minute", "day"):
            g.add_metric([window], self.governor.remaining(window, now))
        yield g


def main(argv: Sequence[str] | None = None) -> None:
    serve(ExecutionDaemon, argv)
