"""algo-risk: every strategy.signal passes here before it can become an order.

Approved signals go out as ``risk.approved``, refused ones as ``risk.blocked`` with the reason,
both with the signal's trace. Positions and P&L are kept from ``execution.fill`` and marked to
``marketdata.tick``; each fill counts once (by fill_id: execution re-sends the day's fills after a
restart). A loss-limit breach, or ``control.kill_switch``, engages the kill switch: new entries are
refused from the next signal on, and open positions are flattened when ``flatten_on_kill_switch``
is set; ``control.kill_switch`` with ``engage: false`` releases it. When algo-execution restarts it
asks (``control.sync``) for the approvals it may have missed; risk re-sends its recent ones (execution
refuses the stale). Positions, the fills counted and the kill switch are checkpointed on every change
and restored; on start risk asks execution (``control.sync``, per engine) for the day's fills, so
fills that came while it was down count too.

With ``[[portfolios]]`` configured, a signal of a strategy some portfolio follows is sized for every
portfolio at once and sent as one net order; its fills are allocated back (``portfolios.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..portfolios.portfolio import Reason
from ..portfolios.portfolio import Signal as PortfolioSignal
from ..runtime.book import Position
from ..runtime.calendar import IST
from ..runtime.checkpoint import Checkpoint
from ..runtime.config import FleetConfig, RiskSection
from ..runtime.daemon import Daemon, serve
from ..runtime.envelope import (
    CONTROL_KILL_SWITCH,
    CONTROL_SYNC,
    EXECUTION_FILL,
    MARKETDATA_TICK,
    PORTFOLIO_ALLOCATION,
    RISK_APPROVED,
    RISK_BLOCKED,
    RISK_PNL,
    STRATEGY_SIGNAL,
    Event,
)
from ..runtime.instrument import InstrumentFacts
from ..runtime.logs import after_turn
from ..runtime.metrics import DaemonMetrics
from ..runtime.rehearsal import rehearse
from ..runtime.tick_watch import TickWatch
from ..strategies import build
from .rehearsal import rehearsal
from .rules import CODES, Decision, RiskRules

if TYPE_CHECKING:  # numpy (~12 MB) is loaded only by a risk that has portfolios
    from .portfolios import Desk

log = logging.getLogger("algo.risk")

# The fills logged since are folded into checkpoint.json this often. The rewrite (write, fsync, rename, fsync of
# the folder: 1-2 ms in the running fleet) blocks the order path's process: once a second it held a signal arriving
# meanwhile for up to 2 ms (bench/pipeline/README.md, round 12). Readers lose nothing: peek() and a restart apply
# checkpoint.wal's records over the file.
FOLD_SEC = 30.0


class RiskDaemon(Daemon):
    """Risk and portfolio: limits, positions, P&L, the kill switch."""

    name = "risk"

    def __init__(self, config: FleetConfig, metrics: DaemonMetrics) -> None:
        super().__init__(config, metrics)
        self.rules = RiskRules(self.section, config.market)
        self.seen_fills: set[str] = set()
        self.flattens = 0  # numbers risk's own flatten orders (their signal ids)
        self.day: str | None = None  # the IST date the P&L is for
        self.recent: deque[tuple[float, dict[str, Any], str]] = deque(maxlen=10_000)  # (monotonic, approval, trace)
        self.state_file = self.state_path("checkpoint.json")
        # Each fill is durable at one fdatasync, appended to checkpoint.wal (its id added to the day's, the
        # positions as they are); checkpoint.json is written whole at most once a second, and on every other change
        self.checkpoint = Checkpoint(self.state_file)
        self.decisions = Counter("algo_risk_decisions", "Risk decisions by reason", ["reason"], registry=metrics.registry)
        for code in CODES:
            self.decisions.labels(code)
        reg = metrics.registry
        self.intents = Counter("algo_risk_portfolio_intents", "Portfolios' intents per signal of a followed strategy, "
                               "by reason (ok: it trades)", ["reason"], registry=reg)
        self.intent_counts = [self.intents.labels(reason.name.lower()) for reason in Reason]  # by Reason's value
        self.allocations = Counter("algo_risk_portfolio_allocations", "Fills of portfolios' net orders allocated back",
                                   registry=reg)
        self.allocation_errors = Counter("algo_risk_portfolio_allocation_errors", "Fills of portfolios' net orders "
                                         "that could not be allocated (refused, nothing changed)", registry=reg)
        self.last_pnl: dict[str, Any] | None = None  # the last risk.pnl published
        self.desk: Desk | None = None  # with [[portfolios]]: built in setup (its log is state)
        metrics.registry.register(RiskCollector(self))
        self.lots: dict[str, int] = {}  # symbol -> lot size, from ticks (portfolios size in lots)
        # Instruments' facts from ticks and signals: risk's own flatten orders carry them as a signal does, so
        # execution (which reads only the ticks of what it trades) can send them at once
        self.instruments: dict[str, InstrumentFacts] = {}
        self.bus.subscribe(MARKETDATA_TICK, self._on_tick, latest_only=True)  # marks: the newest price is the mark
        # Risk needs marks only where it holds or is asked to trade (loss limits, the kill switch's flatten, the
        # next signal); a signal brings its own tick's price for its check. So with thousands of instruments risk
        # reads the few traded, not every tick.
        self.watch = TickWatch(self.bus)
        self.bus.subscribe(STRATEGY_SIGNAL, self._on_signal)
        self.bus.subscribe(EXECUTION_FILL, self._on_fill)
        self.bus.subscribe(CONTROL_KILL_SWITCH, self._on_kill_switch)
        self.bus.subscribe(CONTROL_SYNC, self._on_sync)

    @property
    def section(self) -> RiskSection:
        return self.config.daemons.risk

    async def setup(self) -> None:
        saved = self.checkpoint.read()
        if saved:
            for row in saved["positions"]:
                self.rules.book.positions[(row["engine"], row["symbol"])] = Position(
                    row["quantity"], row["average"], row["realised"])
            for row in saved.get("strategy_positions", []):
                self.rules.strategies.positions[(row["strategy"], row["symbol"])] = Position(
                    row["quantity"], row["average"], row["realised"])
            self.rules.kill_switch = saved["kill_switch"]
            self.seen_fills = set(saved.get("seen_fills", []))
            self.flattens = saved.get("flattens", 0)
            self.day = saved.get("day")
            self.watch.add(*(symbol for _, symbol in self.rules.book.positions))
            log.info("restored %d positions from %s%s", len(saved["positions"]), self.state_file,
                     f"; kill switch engaged: {self.rules.kill_switch}" if self.rules.kill_switch else "")
        self._open_desk(tell=True)
        self._roll_day()

    def _open_desk(self, *, tell: bool) -> None:
        """Portfolios' book from the allocation log, and the instruments their strategies trade watched
        (for lot sizes). At start (``tell``) today's allocations are published again (the report dedups
        by fill id), in case a crash came between one's record and its event."""
        if self.desk is not None:
            self.desk.close()
            self.desk = None
        if not self.config.portfolios:
            return
        from .portfolios import Desk

        self.desk = Desk(self.config.portfolios, self.state_path("portfolios"))
        self.desk.open(datetime.now(IST).date().isoformat())
        for _, section in self.config.daemons.engines():
            for strategy in section.strategies:
                if self.desk.follows(strategy.name):
                    self.watch.add(*(build(strategy.kind, strategy.name, strategy.params).watches() or ()))
        self.watch.add(*self.desk.book.positions)
        self.lots.update({batch.symbol: batch.lot_size for batch in self.desk.batches.values()})
        for allocation in self.desk.allocated.values() if tell else ():
            self.bus.publish(PORTFOLIO_ALLOCATION, allocation, key=allocation["symbol"])
        log.info("%d portfolios following %d strategies; %d open batches, %d fills allocated today", len(self.desk.book),
                 len(self.desk.followed), len(self.desk.batches), len(self.desk.allocated))

    async def reload(self, config: FleetConfig) -> None:
        """New limits apply from the next signal; positions, P&L and the kill switch are kept. Changed
        portfolios: their book is built again from the allocation log, with the portfolios as now configured."""
        before, self.config = self.config, config
        self.rules.limits = self.section
        self.rules.rate.rate = self.section.orders_per_second
        if config.portfolios != before.portfolios:
            self._open_desk(tell=False)

    def _roll_day(self) -> None:
        """Daily limits count today's P&L: at the first moment of a new IST day realised P&L restarts
        at 0 (open positions carry over), and the fills counted are forgotten (execution re-sends only
        today's). An engaged kill switch stays engaged until an operator releases it."""
        today = datetime.now(IST).date().isoformat()
        if today == self.day:
            return
        if self.desk is not None and self.desk.day != today:
            self.desk.roll(today)
        if self.day is not None:
            self.rules.book.new_day()
            self.rules.strategies.new_day()
            self.seen_fills.clear()
            self.checkpoint.behind = True  # should the rewrite below be refused, the next fill's record carries all
            log.info("new trading day %s: realised P&L reset, %d open positions carried over", today,
                     len(self.rules.book.open_symbols()))
        self.day = today
        self._fold()

    async def run(self) -> None:
        # Fills that came while risk was down are only in execution's log: ask for each engine's
        # (counted once by fill_id, like every re-sent fill).
        for engine, _ in self.config.daemons.engines():
            self.bus.publish(CONTROL_SYNC, {"engine": engine, "requester": self.name})
        folded = time.monotonic()
        every = self.section.rehearse_ms / 1000
        warm = asyncio.create_task(rehearse(rehearsal(self), every, self.stopping, log)) if every else None
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(self.stopping.wait(), 1.0)
            except TimeoutError:
                self._roll_day()
                self._publish_pnl()
                if self.checkpoint.trouble or (self.checkpoint.logged and time.monotonic() - folded >= FOLD_SEC):
                    self._fold()
                    folded = time.monotonic()
        if warm is not None:
            warm.cancel()

    def _publish_pnl(self) -> None:
        """``risk.pnl`` when the booked P&L changed (to the paisa): what a console streams instead of
        recomputing the day from the journal."""
        book = self.rules.book
        engines = sorted({e for e, _ in book.positions})
        by_engine = {e: dict(zip(("realised", "unrealised"), (round(v, 2) for v in book.pnl(e)), strict=True))
                     for e in engines}
        realised, unrealised = (round(v, 2) for v in book.pnl())
        pnl = {"realised": realised, "unrealised": unrealised, "by_engine": by_engine,
               "open_positions": len(book.open_symbols())}
        if pnl != self.last_pnl:
            self.last_pnl = pnl
            self.bus.publish(RISK_PNL, pnl)

    async def drain(self) -> None:
        self.save()
        self.checkpoint.close()
        if self.desk is not None:
            self.desk.close()

    def save(self) -> None:
        """The whole state as checkpoint.json, durable (the log's records are in it then); OSError: not."""
        self.checkpoint.write(self._whole())

    def _fold(self) -> None:
        """checkpoint.json rewritten by the serving loop (and at a day roll): a disk that refuses it does not stop
        risk; the log holds every fill since, and the next second tries again."""
        self.checkpoint.fold(self._whole())

    def _whole(self) -> dict[str, Any]:
        return {"kill_switch": self.rules.kill_switch, "seen_fills": sorted(self.seen_fills), "flattens": self.flattens,
                "day": self.day, **self._positions()}

    def _save_fill(self, fill_id: str | None) -> None:
        """A fill, durable at one fdatasync: its id added to the day's and the positions as they are now, appended
        to checkpoint.wal (a rewrite of the whole state grew with the day's fills, on the order path's process)."""
        self.checkpoint.record(self._whole, self._positions, {"seen_fills": [fill_id]} if fill_id else None)

    def _positions(self) -> dict[str, list[dict[str, Any]]]:
        return {
            "positions": [{"engine": e, "symbol": s, "quantity": p.quantity, "average": p.average, "realised": p.realised}
                          for (e, s), p in self.rules.book.positions.items()],
            "strategy_positions": [{"strategy": k, "symbol": s, "quantity": p.quantity, "average": p.average,
                                    "realised": p.realised} for (k, s), p in self.rules.strategies.positions.items()],
        }

    def _on_tick(self, event: Event) -> None:
        p = event.payload
        symbol = p["symbol"]
        self.rules.mark(symbol, p["last_price"], p["exchange_ts"])
        lot = p.get("lot_size")
        if type(lot) is int and lot > 0:
            self.lots[symbol] = lot
        if symbol not in self.instruments:
            self.instruments[symbol] = InstrumentFacts.of_tick(p)
        if self.rules.kill_switch is None:
            for engine, held in self.rules.book.positions:
                if held == symbol and self.rules.book.positions[(engine, held)].quantity:
                    breach = self.rules.loss_breach(engine)  # a mark can breach a loss limit too
                    if breach:
                        self._engage(f"loss limit: {breach}", event.trace)
                        return

    def _on_signal(self, event: Event) -> None:
        s = event.payload
        self.watch.add(s.get("symbol"))  # its marks from now on (the first check uses the signal's own tick)
        self._learn(s)
        fields = {"ENGINE": s.get("engine"), "STRATEGY": s.get("strategy"), "SYMBOL": s.get("symbol"),
                  "TRACE_ID": event.trace}
        if self.desk is not None and (again := self.desk.approvals.get(str(s.get("signal_id")))) is not None:
            self.bus.publish(RISK_APPROVED, again, key=again["symbol"], trace=event.trace)  # delivered twice
            log.info("signal %s was decided before: its approval sent again", s.get("signal_id"), extra=fields)
            return
        try:
            decision, order = self._decide(s)
        except (KeyError, TypeError, ValueError) as exc:
            decision, order = Decision(False, "malformed", f"malformed signal: missing or bad {exc}"), s
        self.decisions.labels(decision.code).inc()
        what = f"{order.get('side')} {order.get('quantity')} {order.get('symbol')}"
        if decision.approved:
            self._approve(order, event.trace)
            after_turn(log, logging.INFO, "approved %s%s", what,
                       f" for {order['portfolios']} portfolios" if "portfolios" in order else "", extra=fields)
        else:
            self.bus.publish(RISK_BLOCKED, {**order, "block_reason": decision.reason, "block_code": decision.code},
                             key=s["symbol"], trace=event.trace)
            after_turn(log, logging.WARNING, "blocked %s: %s", what, decision.reason, extra=fields)

    def _learn(self, s: dict[str, Any]) -> None:
        """The facts a signal brings of its instrument, if it is new here (bad ones are execution's to refuse)."""
        symbol = s.get("symbol")
        if isinstance(symbol, str) and symbol not in self.instruments:
            try:
                facts = InstrumentFacts.of_order(s)
            except ValueError:
                return
            if facts is not None:
                self.instruments[symbol] = facts

    def _decide(self, s: dict[str, Any]) -> tuple[Decision, dict[str, Any]]:
        """The fleet's rules on the signal as sent, or, for a strategy portfolios follow, on the net order
        of every portfolio's intent; that batch is logged before it is approved."""
        if self.desk is None or not self.desk.follows(str(s["strategy"])):
            return self.rules.check(s, time.monotonic()), s
        symbol, side = str(s["symbol"]), {"BUY": 1, "SELL": -1}[s["side"]]
        price = s.get("limit_price") or s.get("tick_price") or self.rules.book.marks.get(symbol)
        lot = self.lots.get(symbol)
        if not isinstance(price, (int, float)) or isinstance(price, bool) or not price > 0:
            return Decision(False, "no_price", f"no market price for {symbol} yet"), s
        if lot is None:
            return Decision(False, "no_lot_size", f"no tick of {symbol} seen yet: its lot size, which portfolios "
                                                  "size in, is unknown"), s
        intents = self.desk.decide(PortfolioSignal(str(s["strategy"]), symbol, side, float(price), lot,  # type: ignore[arg-type]
                                                   exit=not s["entry"]))
        counts = self.desk.reason_counts(intents)
        for reason, count in enumerate(counts):
            if count:
                self.intent_counts[reason].inc(count)
        net = int(intents.lots.sum())
        if not net:
            why = ", ".join(f"{counts[r]} {r.name.lower()}" for r in Reason if counts[r] and r != Reason.NOT_FOLLOWING)
            return Decision(False, "portfolios", f"no portfolio takes it ({why})"), s
        order = {**s, "side": "BUY" if net > 0 else "SELL", "quantity": abs(net) * lot, "allocation_key": s["signal_id"],
                 "portfolios": self.desk.taking_part(intents.lots)}
        decision = self.rules.check(order, time.monotonic())
        if decision.approved:
            try:
                self.desk.record(str(s["signal_id"]), symbol, lot, intents.lots, order)
            except OSError as exc:
                return Decision(False, "state_disk", f"the allocation log cannot be written: {exc.strerror or exc}"), order
        return decision, order

    def _on_fill(self, event: Event) -> None:
        f = event.payload
        if self.desk is not None:
            self._allocate(f, event.trace)
        fill_id = f.get("fill_id")
        if fill_id:
            if fill_id in self.seen_fills:
                return
            self.seen_fills.add(fill_id)
        self.rules.fill(f["engine"], str(f.get("strategy", "")), f["symbol"], f["side"], f["quantity"], f["price"])
        self.watch.add(f["symbol"])
        self._save_fill(fill_id)  # positions are what risk must not forget
        breach = self.rules.loss_breach(f["engine"])
        if breach:
            self._engage(f"loss limit: {breach}", event.trace)

    def _allocate(self, f: dict[str, Any], trace: str) -> None:
        """A fill of a portfolios' net order: shared out to them (each fill once, by fill id)."""
        assert self.desk is not None
        fields = {"SYMBOL": f.get("symbol"), "ORDER_ID": f.get("client_id"), "TRACE_ID": trace}
        try:
            allocation = self.desk.allocate(f, lambda p: self.bus.publish(PORTFOLIO_ALLOCATION, p, key=p["symbol"],
                                                                          trace=trace))
        except (KeyError, TypeError, ValueError, OSError) as exc:  # netting's AllocationError is a ValueError
            self.allocation_errors.inc()
            log.error("fill %s not allocated to portfolios: %s", f.get("fill_id"), exc, extra=fields)
            return
        if allocation is not None:
            self.allocations.inc()
            log.info("fill %s allocated to %d portfolios", allocation["fill_id"], len(allocation["portfolios"]),
                     extra=fields)

    def _approve(self, order: dict[str, Any], trace: str) -> None:
        self.recent.append((time.monotonic(), order, trace))
        self.bus.publish(RISK_APPROVED, order, key=order["symbol"], trace=trace)
        self.watch.add(order["symbol"])  # risk's own flatten orders

    def _on_sync(self, event: Event) -> None:
        """Execution restarted: approvals sent while it was down never reached it. It deduplicates by
        client id and refuses stale ones with a reason, so all are re-sent: one too old to send still gets
        its explicit refusal (an approval left out here would be neither an order nor a reject)."""
        if event.payload.get("requester") != "execution":
            return
        again = [(order, trace) for _, order, trace in self.recent]
        for order, trace in again:
            self.bus.publish(RISK_APPROVED, order, key=order["symbol"], trace=trace)
        log.info("re-sent %d recent approvals to a restarted algo-execution", len(again))

    def _on_kill_switch(self, event: Event) -> None:
        if event.source == self.name:
            return
        if event.payload.get("engage", True):
            self._engage(str(event.payload.get("reason") or f"requested by {event.source}"), event.trace)
        elif self.rules.kill_switch is not None:
            log.warning("kill switch released by %s (was: %s); entries allowed again", event.source,
                        self.rules.kill_switch, extra={"TRACE_ID": event.trace})
            self.rules.kill_switch = None
            self.save()

    def _engage(self, why: str, trace: str) -> None:
        if not self.rules.engage(why):
            return
        self.save()
        log.error("KILL SWITCH ENGAGED: %s; new entries are blocked", why, extra={"TRACE_ID": trace})
        self.bus.publish(CONTROL_KILL_SWITCH, {"engage": True, "reason": why}, trace=trace)
        if self.section.flatten_on_kill_switch:
            portfolios = self._portfolio_holdings()
            for (engine, symbol), pos in self.rules.book.positions.items():
                held = pos.quantity
                if held and (theirs := portfolios.pop(symbol, None)) is not None:
                    units, lot, intents = theirs
                    if units and abs(units) <= abs(held) and (units > 0) == (held > 0):
                        self._flatten(engine, symbol, units, trace, lot, intents)  # the portfolios' part, allocated
                        held -= units
                    else:
                        portfolios[symbol] = theirs  # another engine's position holds it
                if held:
                    self._flatten(engine, symbol, held, trace)
            for symbol in portfolios:
                log.error("kill switch: the portfolios' position in %s is not one engine's; flattened without "
                          "allocating it to them", symbol, extra={"SYMBOL": symbol, "TRACE_ID": trace})
            self.save()

    def _portfolio_holdings(self) -> dict[str, tuple[int, int, Any]]:
        """Per symbol the portfolios hold (in whole lots of a known size): (net units, lot, each one's exit
        in lots)."""
        if self.desk is None:
            return {}
        out = {}
        for symbol, pos in self.desk.book.positions.items():
            lot = self.lots.get(symbol)
            if pos.quantity.any() and lot and not (pos.quantity % lot).any():
                out[symbol] = (int(pos.quantity.sum()), lot, -(pos.quantity // lot))
        return out

    def _flatten(self, engine: str, symbol: str, held: int, trace: str, lot: int = 0, intents: Any = None) -> None:
        """An approved exit of ``held`` units; with ``intents``, the portfolios' exits as a batch of their own."""
        self.flattens += 1
        day = datetime.now(IST).date().isoformat()
        sid = f"risk-flatten:{day}:{self.flattens}"
        order: dict[str, Any] = {"engine": engine, "strategy": "risk-flatten", "signal_id": sid, "symbol": symbol,
                                 "side": "SELL" if held > 0 else "BUY", "quantity": abs(held), "order_type": "MARKET",
                                 "limit_price": None, "reason": "flatten on kill switch", "entry": False}
        if (facts := self.instruments.get(symbol)) is not None:
            order |= facts.order_fields()
        if intents is not None:
            assert self.desk is not None
            order |= {"allocation_key": sid, "portfolios": self.desk.taking_part(intents)}
            try:
                self.desk.record(sid, symbol, lot, intents, order)
            except OSError as exc:
                log.error("kill switch: the allocation log cannot be written (%s); %s flattened without allocating "
                          "it to the portfolios", exc.strerror or exc, symbol, extra={"SYMBOL": symbol, "TRACE_ID": trace})
                del order["allocation_key"], order["portfolios"]
        self._approve(order, trace)

    def status(self) -> str:
        realised, unrealised = self.rules.book.pnl()
        switch = f"KILL SWITCH ({self.rules.kill_switch})" if self.rules.kill_switch else "kill switch off"
        portfolios = ""
        if self.desk is not None:
            counts = self.desk.standing()
            portfolios = (f", {len(self.desk.book)} portfolios ({counts[Reason.LOSS_LIMIT]} at their loss limit, "
                          f"{counts[Reason.DISABLED]} disabled)")
        return (f"{len(self.rules.book.open_symbols())} open positions, P&L {realised + unrealised:+,.0f} "
                f"(realised {realised:+,.0f}), {switch}{portfolios}")


class RiskCollector(Collector):
    def __init__(self, daemon: RiskDaemon) -> None:
        self.daemon = daemon

    def collect(self) -> Iterable[GaugeMetricFamily]:
        rules, limits = self.daemon.rules, self.daemon.section
        yield GaugeMetricFamily("algo_risk_kill_switch", "1 while the kill switch is engaged",
                                value=int(rules.kill_switch is not None))
        yield GaugeMetricFamily("algo_risk_open_positions", "Symbols with an open position",
                                value=len(rules.book.open_symbols()))
        pnl = GaugeMetricFamily("algo_risk_pnl_rupees", "P&L today by engine", labels=["engine", "kind"])
        limit_gauge = GaugeMetricFamily("algo_risk_loss_limit_rupees", "The configured daily loss limit",
                                        labels=["engine"])
        distance = GaugeMetricFamily("algo_risk_loss_limit_distance_rupees",
                                     "How much more the engine (or 'fleet') may lose before its limit", labels=["engine"])
        engines: dict[str, Any] = {e: limits.daily_loss_limit.get(e) for e, _ in rules.book.positions}
        engines.update(limits.daily_loss_limit)
        for engine, limit in sorted(engines.items()):
            realised, unrealised = rules.book.pnl(engine)
            pnl.add_metric([engine, "realised"], realised)
            pnl.add_metric([engine, "unrealised"], unrealised)
            if limit is not None:
                distance.add_metric([engine], limit + realised + unrealised)
                limit_gauge.add_metric([engine], limit)
        realised, unrealised = rules.book.pnl()
        distance.add_metric(["fleet"], limits.fleet_daily_loss_limit + realised + unrealised)
        limit_gauge.add_metric(["fleet"], limits.fleet_daily_loss_limit)
        yield pnl
        yield distance
        yield limit_gauge
        per_strategy = GaugeMetricFamily("algo_risk_strategy_loss_limit_distance_rupees",
                                         "How much more the strategy may lose before its entries are blocked",
                                         labels=["strategy"])
        for strategy, limit in sorted(limits.strategy_daily_loss_limit.items()):
            realised, unrealised = rules.strategies.pnl(strategy)
            per_strategy.add_metric([strategy], limit + realised + unrealised)
        yield per_strategy
        standing = GaugeMetricFamily("algo_risk_portfolios", "Configured portfolios by standing: ok, or refusing "
                                     "entries because of their loss limit or being disabled", labels=["standing"])
        counts = self.daemon.desk.standing() if self.daemon.desk is not None else [0] * len(Reason)
        for reason in (Reason.OK, Reason.LOSS_LIMIT, Reason.DISABLED):
            standing.add_metric([reason.name.lower()], int(counts[reason]))
        yield standing


def main(argv: Sequence[str] | None = None) -> None:
    serve(RiskDaemon, argv)

