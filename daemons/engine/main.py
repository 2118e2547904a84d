"""The segment engines, algo-fno, algo-equity and algo-options, and algo-strategy@NAME (one
strategy in a process of its own): each feeds its strategies ticks and fills and publishes what
they decide as ``strategy.signal``.

Every signal gets a deterministic ``signal_id`` (strategy, session day, the strategy's signal
count), from which execution derives the order's client id: a replayed day yields the same ids.
Strategy state is checkpointed before each signal goes out and after each fill (appended to
``checkpoint.wal`` at one fdatasync), and every ``checkpoint_sec`` and on stop (``checkpoint.json``, which
takes the log's place), so a crash (even kill -9, even a power cut) never reuses a signal id or forgets a fill.
After a restart the engine asks execution for the day's fills (``control.sync``); fills are applied
once each, by fill_id, so the ones it already had are ignored.

Control-plane commands (``control.command``, engine/commands.py) pause, resume, stop, start, restart
and reconfigure one strategy; what they change (stopped strategies, parameters set at run time, the
outcomes by command id) is checkpointed with the rest, so it outlives a restart.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, ClassVar

from prometheus_client import Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from ..features.codec import snapshot_bars  # decodes with numpy, imported only when a snapshot comes
from ..runtime import checkpoint
from ..runtime.book import Position, PositionBook
from ..runtime.calendar import IST
from ..runtime.config import ConfigError, EngineSection, FleetConfig, Problem, resolve_path
from ..runtime.daemon import Daemon, serve
from ..runtime.envelope import (
    CONTROL_COMMAND,
    CONTROL_PAUSE,
    CONTROL_RESULT,
    CONTROL_RESUME,
    CONTROL_SYNC,
    EXECUTION_FILL,
    FEATURES_BAR,
    FEATURES_SNAPSHOT,
    FEATURES_SYNC,
    MARKETDATA_TICK,
    STRATEGY_SIGNAL,
    Event,
)
from ..runtime.instrument import InstrumentFacts
from ..runtime.metrics import DaemonMetrics
from ..strategies import FeatureBar, Fill, ModelStrategy, Signal, Strategy, Tick, build, watched
from .commands import REBUILDS, BadCommand, Command, CommandFailed, Executed, HostedState, Outcome, hosted_transition
from .guard import Cause, StrategyGuard

log = logging.getLogger("algo.engine")


class EngineDaemon(Daemon):
    """Hosts strategies; the subclasses name the engine (its config section, unit and risk limits)."""

    engine: str  # whose risk limits apply; the segment engines' own name

    def __init__(self, config: FleetConfig, metrics: DaemonMetrics) -> None:
        super().__init__(config, metrics)
        self.strategies: dict[str, Strategy] = {
            s.name: build(s.kind, s.name, s.params) for s in self.section.strategies
            if s.enabled and s.process == "engine"
        }
        self.paused: set[str] = set()
        self.stopped: dict[str, Strategy] = {}  # stopped by a command: no ticks; kept for its state, position, fills
        self.commanded: dict[str, dict[str, Any]] = {}  # parameters a command set (start, restart, update_config)
        self.created: dict[str, str] = {}  # kinds of the strategies a command built that fleet.toml does not declare
        self.executed = Executed()  # outcomes of the control-plane commands applied here, by id
        self.counts: dict[str, int] = dict.fromkeys(self.strategies, 0)  # signals per strategy, ever
        self.seen_fills: set[str] = set()
        self.day: str | None = None  # the IST date of the P&L and the fills seen
        self.cpu_ns: dict[str, int] = {}  # CPU time each strategy spent in on_tick (this process)
        self.book = PositionBook()  # per (strategy, symbol), for status and the P&L an operator sees
        self.traded: set[str] = set()
        # What a signal of a symbol tells execution of its instrument (daemons/runtime/instrument.py), from the
        # first tick of each symbol a strategy here reads
        self.instruments: dict[str, InstrumentFacts] = {}
        self.last_tick = 0.0
        # Made durable before each signal goes out (its write-ahead log: one fdatasync), and as the whole file
        # after each fill, every checkpoint_sec and on stop
        self.checkpoint = checkpoint.Checkpoint(self.state_path("checkpoint.json"))
        self.state_file = self.checkpoint.path
        self.signals = Counter("algo_engine_signals", "Signals published", ["strategy"], registry=metrics.registry)
        self.paused_gauge = Gauge("algo_engine_strategy_paused", "1 while a strategy is paused", ["strategy"],
                                  registry=metrics.registry)
        self.commands = Counter("algo_engine_commands", "Control-plane commands answered", ["verb", "outcome"],
                                registry=metrics.registry)
        for name in self.strategies:
            self.signals.labels(name)
            self.paused_gauge.labels(name).set(0)
        self.guard = StrategyGuard(self.engine, metrics.registry, self.save)
        self.guard.configure(self.section.strategy_error_limit, self.section.strategy_error_window_sec, self.strategies)
        self._states: dict[str, dict[str, Any]] = {}  # each strategy's last good snapshot
        # (symbol, underlying) -> the strategies that watch its ticks, in order; for self._audience_of
        self._audience: dict[tuple[str, str], list[tuple[str, Strategy]]] = {}
        self._audience_of = self.strategies
        metrics.registry.register(StrategyBookCollector(self))
        self.bus.subscribe(MARKETDATA_TICK, self._on_tick)
        self.reads_bars = False  # subscribed to features.bar: once a strategy reads bars (model strategies)
        self._history_waiting: dict[str, tuple[list[FeatureBar], Event]] = {}  # by symbol: no tick of it yet
        self._read_bars_if_needed()
        self.bus.subscribe(EXECUTION_FILL, self._on_fill)
        self.bus.subscribe("control.*", self._on_control)
        self._ask_for_watched_ticks()

    @classmethod
    def section_of(cls, config: FleetConfig) -> EngineSection:
        section: EngineSection = getattr(config.daemons, cls.engine)
        return section

    @property
    def section(self) -> EngineSection:
        return self.section_of(self.config)

    async def setup(self) -> None:
        saved = self.checkpoint.read()
        if saved:
            self._restore(saved)
        self._roll_day()
        self._open(self.strategies)

    def _open(self, names: Iterable[str]) -> None:
        """Load what each strategy's config only names (a model file); one that cannot is disabled, alone."""
        for name in names:
            try:
                self.strategies[name].open()
            except Exception as exc:
                self.guard.disable(name, f"cannot start: {exc}", Cause.UNUSABLE)

    def _read_bars_if_needed(self) -> None:
        if not self.reads_bars and any(s.reads_bars for s in self.strategies.values()):
            self.reads_bars = True
            self.bus.subscribe(FEATURES_BAR, self._on_bar)
            self.bus.subscribe(FEATURES_SNAPSHOT, self._on_snapshot)

    def _restore(self, saved: dict[str, Any]) -> None:
        self._restore_commanded(saved.get("params", {}), saved.get("stopped", []), saved.get("created", {}))
        self.executed.load(saved.get("commands", []))
        hosted = self._hosted()
        self.guard.restore(set(saved.get("disabled", [])) & set(hosted))
        for name, state in saved.get("strategies", {}).items():
            if name in hosted:
                self._states[name] = state  # kept as it is until a snapshot succeeds
                try:
                    hosted[name].restore(state)
                except Exception as exc:  # it runs on partial state: no new exposure until someone looks
                    self.guard.failed(name, "restore", exc)
                    self.guard.disable(name, "its checkpointed state could not be restored")
        self.paused = set(saved.get("paused", [])) & set(self.strategies)
        for name in self.paused:
            self.paused_gauge.labels(name).set(1)
        self.counts.update({k: v for k, v in saved.get("counts", {}).items() if k in hosted})
        self.seen_fills = set(saved.get("seen_fills", []))
        self.day = saved.get("day")
        for row in saved.get("positions", []):
            self.book.positions[(row["strategy"], row["symbol"])] = Position(
                row["quantity"], row["average"], row["realised"])
            self.traded.add(row["symbol"])
        log.info("%s restored %d strategies and %d positions from %s", self.name, len(saved.get("strategies", {})),
                 len(self.book.positions), self.state_file)

    def _restore_commanded(self, params: dict[str, dict[str, Any]], stopped: list[str], created: object) -> None:
        """What commands changed before the restart: their parameters (a strategy a command started is
        built even if fleet.toml leaves it disabled), the strategies created at run time (their kind is
        checkpointed: fleet.toml does not know them), and the strategies they stopped."""
        declared = self._declared()
        kinds = {n: k for n, k in created.items() if isinstance(k, str) and n not in declared} \
            if isinstance(created, dict) else {}
        for name, p in params.items():
            kind = declared[name].kind if name in declared else kinds.get(name)
            if kind is None:
                continue  # fleet.toml no longer names it, and no command created it
            try:
                self._place(name, build(kind, name, p), running=True)
                self.commanded[name] = p
                if name in kinds:
                    self.created[name] = kind
            except ValueError as exc:
                log.warning("%s: parameters set by a command no longer build (%s); %s", name, exc,
                            "fleet.toml's apply" if name in declared else "it is not run",
                            extra={"ENGINE": self.engine, "STRATEGY": name})
        for name in stopped:
            if name in self.strategies:
                self.stopped[name] = self.strategies.pop(name)
        self._strategies_changed()

    def _declared(self) -> dict[str, Any]:
        """The strategies fleet.toml gives this unit, enabled or not (a command may start a disabled one)."""
        return {s.name: s for s in self.section.strategies if s.process == "engine"}

    def _hosted(self) -> dict[str, Strategy]:
        return {**self.strategies, **self.stopped}

    def _place(self, name: str, strategy: Strategy, *, running: bool) -> None:
        """Put a (re)built strategy in the running or the stopped set, its position carried over."""
        old = self.strategies.pop(name, None) or self.stopped.pop(name, None)
        if old is not None:
            strategy.position = old.position
        (self.strategies if running else self.stopped)[name] = strategy
        self._states.pop(name, None)
        self.counts.setdefault(name, 0)
        self.signals.labels(name)
        self.paused_gauge.labels(name).set(int(name in self.paused))

    def _strategies_changed(self) -> None:
        """The running set changed: the guard's names, the ticks asked of the broker, who watches what."""
        self.guard.configure(self.section.strategy_error_limit, self.section.strategy_error_window_sec, self._hosted())
        self._audience.clear()
        self._ask_for_watched_ticks()
        self._read_bars_if_needed()

    def _roll_day(self) -> None:
        """A new IST day: the P&L shown restarts (positions carry over), and fill ids of earlier days
        are forgotten: execution re-sends only today's."""
        today = datetime.now(IST).date().isoformat()
        if today != self.day:
            if self.day is not None:
                self.book.new_day()
                self.seen_fills.clear()
                self.checkpoint.behind = True  # the next record carries the cleared fill ids
            self.day = today

    async def reload(self, config: FleetConfig) -> None:
        """Apply changed strategies without a restart: a strategy whose kind or parameters changed is
        rebuilt (its position and signal count carried over, its indicators start afresh), a new one
        starts, a removed or disabled one stops (with a warning if it still holds a position)."""
        old_config, self.config = self.config, config
        before = {s.name: s for s in self.section_of(old_config).strategies if s.enabled and s.process == "engine"}
        after = {s.name: s for s in self.section.strategies if s.enabled and s.process == "engine"}
        for name in before.keys() - after.keys():
            gone = self.strategies.pop(name, None) or self.stopped.pop(name)
            self.commanded.pop(name, None)
            self._states.pop(name, None)
            held = {k: v for k, v in gone.position.items() if v}
            log.warning("%s removed%s", name, f"; it still holds {held}: exit by hand" if held else "",
                        extra={"ENGINE": self.engine, "STRATEGY": name})
        changed = []
        for name, section in after.items():
            if before.get(name) == section:
                continue
            changed.append(name)
            self.commanded.pop(name, None)  # a fleet.toml edit is deliberate: it wins over a command's parameters
            self.created.pop(name, None)  # fleet.toml now declares what a command created
            self._place(name, build(section.kind, name, section.params), running=name not in self.stopped)
            log.info("%s %s: %s %s", name, "reconfigured" if name in before else "added", section.kind,
                     section.params, extra={"ENGINE": self.engine, "STRATEGY": name})
        self._strategies_changed()
        self._open(self.strategies)  # a model file replaced in place is loaded again, the position kept
        self._ask_for_history(changed)
        self.save()

    def _ask_for_watched_ticks(self) -> None:
        """Tell the broker which ticks (and bars and history) to send: the symbols and underlyings the
        strategies watch, or every one when one of them reads them all (``Strategy.watches`` is None)."""
        names = watched(self.strategies.values())
        for topic in (MARKETDATA_TICK, FEATURES_BAR, FEATURES_SNAPSHOT):
            self.bus.filter_keys(topic, names)

    def _ask_for_history(self, names: Iterable[str]) -> None:
        """The feature cache's recent bars of what these strategies watch, for those that read bars: they
        need not wait for bars to accumulate (``features.snapshot``, answered to this process's name)."""
        readers = [self.strategies[n] for n in names if n in self.strategies and self.strategies[n].reads_bars]
        if not readers:
            return
        symbols = watched(readers)
        self.bus.publish(FEATURES_SYNC, {} if symbols is None else {"symbols": sorted(symbols)},
                         key=self.bus.events.source)  # keyed by requester: market data conflates per key

    def _watchers(self, symbol: str, underlying: str) -> list[tuple[str, Strategy]]:
        """The strategies that read this instrument's ticks (``Strategy.watches``), worked out once per instrument."""
        if self._audience_of is not self.strategies:
            self._audience_of = self.strategies
            self._audience.clear()
        key = (symbol, underlying)
        watchers = self._audience.get(key)
        if watchers is None:
            watchers = self._audience[key] = [
                (name, strategy) for name, strategy in self.strategies.items()
                if (watched := strategy.watches()) is None or symbol in watched or underlying in watched]
        return watchers

    async def run(self) -> None:
        # Fills that arrived while this engine was down are only in execution's log: ask for them.
        self.bus.publish(CONTROL_SYNC, {"engine": self.engine, "strategies": sorted(self.strategies)})
        self._ask_for_history(self.strategies)
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(self.stopping.wait(), self.section.checkpoint_sec)
            except TimeoutError:
                self._roll_day()
                self.checkpoint.fold(self._state())

    async def drain(self) -> None:
        self.save()
        self.checkpoint.close()

    def save(self) -> None:
        """The whole state as checkpoint.json (what an operator and the tests read), durable."""
        self.checkpoint.write(self._state())

    def _signal(self, name: str, signals: list[dict[str, Any]], trace: str) -> None:
        """Strategy ``name``'s decision: its state recorded, its signals published, the record made durable.

        The record (appended to checkpoint.wal, folded into checkpoint.json by the next save()) is written
        before the signals go out, so a killed engine never hands out a signal id twice nor loses the decision
        behind it: the page cache keeps what a process wrote. Its fdatasync follows the publish, before the
        engine handles anything else: the signal no longer waits for the disk (~0.35 ms of tick -> signal,
        bench/pipeline/README.md, round 12), and an order it causes reaches a broker only after execution's own
        later flush (its intent, before Kite's place call). The record holds the engine's settings and counts
        and that one strategy's state: not the day's fill ids and positions (the records before hold them) nor
        the other strategies' (each one's is durable with its own signals, and in checkpoint.json), so its cost
        grows neither with the day nor with the strategies the engine hosts (bench/wal/day_growth.py). A record
        the disk refuses stops the signals (the handler's error); a flush it refuses after them is logged."""
        self.checkpoint.record(self._state, self._settings, merge={"strategies": self._snapshots([name])}, sync=False)
        self._publish(signals, trace)
        try:
            self.checkpoint.sync()
        except OSError as exc:
            log.error("the state before %s's signals is written but not flushed to disk (%s): a power cut could "
                      "lose it; the next record holds the whole state", name, exc.strerror or exc,
                      extra={"ENGINE": self.engine, "STRATEGY": name, "TRACE_ID": trace})

    def _save_fill(self, fill_id: str, name: str) -> None:
        """A fill of strategy ``name``, durable at one fdatasync: its id added to the day's, the positions and that
        strategy's state as they are now (checkpoint.json takes it all at the next save)."""
        self.checkpoint.record(self._state, lambda: self._settings() | {"positions": self._positions()},
                               {"seen_fills": [fill_id]}, {"strategies": self._snapshots([name])})

    def _state(self, *, fills: bool = True) -> dict[str, Any]:
        return {"strategies": self._snapshots(self._hosted()), **self._settings()} | (
            {"seen_fills": sorted(self.seen_fills), "positions": self._positions()} if fills else {})

    def _snapshots(self, names: Iterable[str]) -> dict[str, Any]:
        """The states of the hosted strategies among ``names``: a snapshot that fails keeps the last good one."""
        hosted = self._hosted()
        wanted = [name for name in names if name in hosted]
        for name in wanted:
            try:
                self._states[name] = hosted[name].snapshot()
            except Exception as exc:  # the strategy's own error, counted against it
                self.guard.failed(name, "snapshot", exc)
        return {name: self._states[name] for name in wanted if name in self._states}

    def _settings(self) -> dict[str, Any]:
        """What the engine keeps besides its strategies' states and the day's fills: small, in every record."""
        return {
            "paused": sorted(self.paused),
            "stopped": sorted(self.stopped),
            "params": self.commanded,
            "created": self.created,
            "commands": self.executed.dump(),
            "disabled": sorted(self.guard.disabled),
            "counts": self.counts,
            "day": self.day,
        }

    def _positions(self) -> list[dict[str, Any]]:
        return [{"strategy": k, "symbol": s, "quantity": p.quantity, "average": p.average, "realised": p.realised}
                for (k, s), p in self.book.positions.items()]

    def _on_tick(self, event: Event) -> None:
        self.last_tick = time.monotonic()
        p = event.payload
        self.book.marks[p["symbol"]] = p["last_price"]
        if self._history_waiting and p["symbol"] in self._history_waiting:
            bars, snapshot = self._history_waiting.pop(p["symbol"])
            self._hand_bars(p["symbol"], bars[-1].end_ns, snapshot, "on_history", lambda s: s.on_history(bars))
        watchers = self._watchers(p["symbol"], p.get("underlying") or "")
        if not watchers:
            return  # no strategy here reads it
        if p["symbol"] not in self.instruments:
            self.instruments[p["symbol"]] = InstrumentFacts.of_tick(p)
        tick = Tick.from_payload(p)
        for name, strategy in watchers:
            try:
                out = self._signals_of(name, strategy, tick, event)
            except Exception as exc:  # one strategy's error never skips the others
                self.guard.failed(name, "on_tick", exc, event.trace)
                continue
            if out:
                self._signal(name, out, event.trace)

    def _on_bar(self, event: Event) -> None:
        """A bar's features, for the strategies that read bars and watch its symbol."""
        p = event.payload
        try:
            bar = FeatureBar(int(p["token"]), str(p["symbol"]), int(p["end"]), list(p["v"]))
        except (KeyError, TypeError, ValueError):
            return  # the bus client counts malformed envelopes; a payload of another schema is not ours
        if bar.symbol in self.book.marks:  # else no tick of it seen yet: no price to stamp a signal with (risk needs one)
            self._hand_bars(bar.symbol, bar.end_ns, event, "on_bar", lambda s: s.on_bar(bar))

    def _on_snapshot(self, event: Event) -> None:
        """A symbol's recent bars from the feature cache, asked for by ``_ask_for_history``: handed to the
        strategies that read its bars once it has a price (its first tick, if none came yet)."""
        p = event.payload
        if p.get("to") != self.bus.events.source:
            return  # another process's history
        try:
            symbol, token = str(p["symbol"]), int(p["token"])
            bars = [FeatureBar(token, symbol, end_ns, values) for end_ns, values in snapshot_bars(p)]
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("features.snapshot from %s unreadable: %s: %s", event.source, type(exc).__name__, exc,
                        extra={"ENGINE": self.engine, "TRACE_ID": event.trace})
            return
        if not bars:
            return
        if symbol in self.book.marks:
            self._hand_bars(symbol, bars[-1].end_ns, event, "on_history", lambda s: s.on_history(bars))
        else:
            self._history_waiting[symbol] = (bars, event)

    def _hand_bars(self, symbol: str, end_ns: int, event: Event, what: str,
                   call: Callable[[Strategy], list[Signal]]) -> None:
        """``call`` each strategy that reads bars and watches ``symbol`` (on_bar, on_history); what they
        decide is stamped with the symbol's last tick price and published."""
        price = self.book.marks[symbol]
        for name, strategy in self._watchers(symbol, ""):
            if not strategy.reads_bars:
                continue
            try:
                started = time.thread_time_ns()
                try:
                    signals = call(strategy)
                finally:
                    self.cpu_ns[name] = self.cpu_ns.get(name, 0) + time.thread_time_ns() - started
                out = self._stamped(name, signals, price, end_ns, event)
            except Exception as exc:
                self.guard.failed(name, what, exc, event.trace)
                continue
            if out:
                self._signal(name, out, event.trace)

    def _signals_of(self, name: str, strategy: Strategy, tick: Tick, event: Event) -> list[dict[str, Any]]:
        """What the strategy's reaction to the tick publishes; whatever it raises or returns wrong is its error."""
        started = time.thread_time_ns()
        try:
            signals = strategy.on_tick(tick)
        finally:
            self.cpu_ns[name] = self.cpu_ns.get(name, 0) + time.thread_time_ns() - started
        return self._stamped(name, signals, tick.last_price, tick.exchange_ts, event)

    def _stamped(self, name: str, signals: list[Signal], price: float, exchange_ts: int,
                 event: Event) -> list[dict[str, Any]]:
        """Signals as ``strategy.signal`` payloads: checked, counted, with the price and time they saw."""
        if not signals:
            return []
        day = datetime.fromtimestamp(exchange_ts / 1e9, IST).date().isoformat()
        blocked = name in self.paused or name in self.guard.disabled
        out = []
        for signal in signals:
            if not isinstance(signal, Signal) or signal.strategy != name:
                raise TypeError(f"it returned {signal!r}, not a Signal of {name} (use self.signal())")
            if blocked and signal.entry:
                continue  # paused or disabled after errors: no new exposure; exits still go out
            self.counts[name] += 1
            facts = self.instruments.get(signal.symbol)
            out.append({"engine": self.engine, **signal._asdict(), "tick_price": price,
                        "tick_exchange_ts": exchange_ts, "tick_ts": event.ts,
                        "signal_id": f"{name}:{day}:{self.counts[name]}", **(facts.order_fields() if facts else {})})
        return out

    def _publish(self, signals: list[dict[str, Any]], trace: str) -> None:
        """One decision's signals, stamped and written together (a reversal's exit and entry, a straddle's legs),
        then counted and logged: the second never waits for the first's log line, nor for the rest of the turn."""
        published = [self.bus.publish(STRATEGY_SIGNAL, p, key=p["symbol"], trace=trace) for p in signals]
        if len(published) > 1:
            self.bus.flush()
        for payload, event in zip(signals, published, strict=True):
            symbol = payload["symbol"]
            self.signals.labels(payload["strategy"]).inc()
            self.traded.add(symbol)
            log.info("%s %d %s: %s", payload["side"], payload["quantity"], symbol, payload["reason"],
                     extra={"ENGINE": self.engine, "STRATEGY": payload["strategy"], "SYMBOL": symbol,
                            "TRACE_ID": event.trace})

    def _on_fill(self, event: Event) -> None:
        p = event.payload
        strategy = self._hosted().get(p.get("strategy", ""))  # a stopped strategy's order may still fill
        fill_id = p.get("fill_id")
        if strategy is None or not fill_id or fill_id in self.seen_fills:
            return  # another engine's, or one already applied (execution re-sends after restarts)
        self.seen_fills.add(fill_id)
        fill = Fill(p["symbol"], p["side"], p["quantity"], p["price"])
        try:
            strategy.on_fill(fill)
        except Exception as exc:  # the engine's book still takes the fill
            self.guard.failed(strategy.name, "on_fill", exc, event.trace)
        self.book.fill(strategy.name, p["symbol"], p["side"], p["quantity"], p["price"])
        self.traded.add(p["symbol"])
        self._save_fill(fill_id, strategy.name)

    def _on_control(self, event: Event) -> None:
        if event.type == CONTROL_COMMAND:
            self._on_command(event)
            return
        if event.type not in (CONTROL_PAUSE, CONTROL_RESUME):
            return
        engine, only = event.payload.get("engine"), event.payload.get("strategy")
        if engine not in (None, self.engine):
            return
        names = [only] if only in self.strategies else ([] if only else list(self.strategies))
        for name in names:
            (self.paused.add if event.type == CONTROL_PAUSE else self.paused.discard)(name)
            if event.type == CONTROL_RESUME:
                self.guard.resume(name)
            self.paused_gauge.labels(name).set(int(name in self.paused))
            log.warning("%s %s", name, "paused: entries blocked" if name in self.paused else "resumed",
                        extra={"ENGINE": self.engine, "STRATEGY": name, "TRACE_ID": event.trace})
        if names:
            self.save()

    def _on_command(self, event: Event) -> None:
        """Carry out a control-plane command addressed to this unit, once per id, and answer it."""
        try:
            command = Command.parse(event.payload)
        except BadCommand as exc:
            if event.payload.get("unit") == self.unit:
                self.commands.labels("?", "malformed").inc()
                log.warning("malformed control.command from %s ignored: %s", event.source, exc,
                            extra={"ENGINE": self.engine, "TRACE_ID": event.trace})
            return
        if command.unit != self.unit:
            return
        fields = {"ENGINE": self.engine, "STRATEGY": command.strategy, "ACTOR": command.actor,
                  "COMMAND_ID": command.id, "TRACE_ID": event.trace}
        outcome = self.executed.get(command.id)
        if outcome is not None:
            self.commands.labels(command.verb, "repeated").inc()
            log.info("%s %s (command %s, sent again): already %s", command.verb, command.strategy, command.id,
                     outcome.status, extra=fields)
        else:
            outcome = self._carry_out(command)
            self.executed.add(command.id, outcome)
            self.save()  # the change and its outcome together, before the answer: a crash never applies it twice
            self.commands.labels(command.verb, outcome.status).inc()
            if outcome.status == "executed":
                log.warning("%s %s by %s: executed (%s)", command.verb, command.strategy, command.actor,
                            self._describe(command.strategy), extra=fields)
            else:
                log.warning("%s %s by %s: failed: %s", command.verb, command.strategy, command.actor, outcome.reason,
                            extra=fields)
        self.bus.publish(CONTROL_RESULT, {"command_id": command.id, "unit": self.unit, "strategy": command.strategy,
                                          "status": outcome.status, "reason": outcome.reason}, trace=event.trace)

    def _carry_out(self, command: Command) -> Outcome:
        name = command.strategy
        declared = self._declared()
        if name not in declared and name not in self._hosted() and command.kind is None:
            return Outcome("failed", f"unknown strategy {name!r}: {self.unit} does not host it")
        try:
            target = hosted_transition(self._state_of(name), command.verb)
            fresh = self._rebuilt(name, command, declared, opened=target != "stopped") if command.verb in REBUILDS else None
        except CommandFailed as exc:
            return Outcome("failed", str(exc))
        was_running = name in self.strategies
        if fresh is not None:
            self._place(name, fresh, running=was_running)
            self.commanded[name] = fresh.params
            if name not in declared:
                self.created[name] = fresh.kind
        self._settle(name, target, command.verb)
        if target != "stopped" and not was_running and fresh is None:
            self._open([name])  # started as it was stopped: load what it names, as at the engine's start
        if target != "stopped" and (fresh is not None or not was_running):
            self._ask_for_history([name])  # built or started afresh: its recent bars, as at the engine's start
        return Outcome("executed")

    def _state_of(self, name: str) -> HostedState:
        if name in self.strategies:
            return "paused" if name in self.paused else "running"
        return "stopped"  # stopped by a command, or disabled in fleet.toml (never built)

    def _rebuilt(self, name: str, command: Command, declared: dict[str, Any], *, opened: bool) -> Strategy | None:
        """The strategy built with the command's parameters, and loaded (``open``) when it is to run; None
        when a start finds it with those parameters already. CommandFailed when the strategy refuses them
        (its constructor, or what they name, such as a model file, cannot be loaded): nothing changes."""
        current = self._hosted().get(name)
        if current is not None:
            kind, params = current.kind, dict(current.params)
        elif name in declared:
            kind, params = declared[name].kind, dict(declared[name].params)
        else:  # created at run time: the registry's definition, which the command carries
            kind, params = str(command.kind), dict(command.params or {})
        if command.verb == "update_config":
            params.update(command.args["params"])
        elif command.params is not None:
            params = dict(command.params)
        try:
            fresh = build(kind, name, params)
        except ValueError as exc:
            raise CommandFailed(f"parameters rejected by the strategy: {exc}") from None
        if current is not None and command.verb == "start" and fresh.params == current.params:
            return None
        if opened:
            try:
                fresh.open()
            except Exception as exc:
                raise CommandFailed(f"parameters rejected by the strategy: cannot start: {exc}") from None
        return fresh

    def _settle(self, name: str, target: HostedState, verb: str) -> None:
        """Move the strategy to ``target`` (running, paused or stopped)."""
        if target == "stopped":
            if name in self.strategies:
                self.stopped[name] = self.strategies.pop(name)
                held = {k: v for k, v in self.stopped[name].position.items() if v}
                if held:
                    log.warning("%s stopped while it holds %s: no exits go out until it starts again", name, held,
                                extra={"ENGINE": self.engine, "STRATEGY": name})
            self.paused.discard(name)
        else:
            if name not in self.strategies:
                self._place(name, self.stopped.pop(name), running=True)
            (self.paused.add if target == "paused" else self.paused.discard)(name)
            if verb == "resume":
                self.guard.resume(name)
        self.paused_gauge.labels(name).set(int(name in self.paused))
        self._strategies_changed()

    def _describe(self, name: str) -> str:
        strategy = self._hosted()[name]
        return f"{self._state_of(name)}, {strategy.kind} {strategy.params}"

    def status(self) -> str:
        age = f"{time.monotonic() - self.last_tick:.1f}s ago" if self.last_tick else "none yet"
        held = ([f"{len(self.paused)} paused"] if self.paused else []) + (
            [f"{len(self.stopped)} stopped"] if self.stopped else []) + (
            [f"DISABLED after errors: {', '.join(sorted(self.guard.disabled))}"] if self.guard.disabled else [])
        paused = f" ({'; '.join(held)})" if held else ""
        realised, unrealised = self.book.pnl()
        return (f"{self.config.fleet.mode}: {len(self.strategies)} strategies{paused}, {len(self.traded)} instruments "
                f"traded, {len(self.book.open_symbols())} open positions, P&L {realised + unrealised:+,.0f} "
                f"(realised {realised:+,.0f}), {sum(self.counts.values())} signals, last tick {age}")


class StrategyBookCollector(Collector):
    """Per-strategy P&L, open positions and CPU, read at scrape time (memory is per process: a strategy
    whose footprint matters runs as algo-strategy@NAME and has its own algo_process_*)."""

    def __init__(self, daemon: EngineDaemon) -> None:
        self.daemon = daemon

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        book = self.daemon.book
        pnl = GaugeMetricFamily("algo_engine_pnl_rupees", "P&L by strategy", labels=["strategy", "kind"])
        open_ = GaugeMetricFamily("algo_engine_open_positions", "Symbols the strategy holds", labels=["strategy"])
        for name in sorted(self.daemon.strategies):
            realised, unrealised = book.pnl(name)  # the engine's book is keyed by strategy
            held = sum(1 for (strategy, _), p in book.positions.items() if strategy == name and p.quantity)
            pnl.add_metric([name, "realised"], realised)
            pnl.add_metric([name, "unrealised"], unrealised)
            open_.add_metric([name], held)
        yield pnl
        yield open_
        cpu = CounterMetricFamily("algo_engine_strategy_cpu_seconds", "CPU time spent in the strategy's on_tick",
                                  labels=["strategy"])
        for name in sorted(self.daemon.strategies):
            cpu.add_metric([name], self.daemon.cpu_ns.get(name, 0) / 1e9)
        yield cpu
        models = {n: s for n, s in sorted(self.daemon.strategies.items()) if isinstance(s, ModelStrategy)}
        if not models:
            return
        seconds = HistogramMetricFamily("algo_model_inference_seconds", "Time of one model prediction",
                                        labels=["strategy"])
        predictions = CounterMetricFamily("algo_model_predictions", "Predictions made (features warmed up)",
                                          labels=["strategy"])
        loaded = GaugeMetricFamily("algo_model_info", "The model a strategy runs (1), by version and feature hash; "
                                   "0 while none could be loaded", labels=["strategy", "version", "features"])
        for name, strategy in models.items():
            seconds.add_metric([name], strategy.inference.buckets(), strategy.inference.total)
            predictions.add_metric([name], strategy.predictions)
            m = strategy.model
            loaded.add_metric([name, m.version if m else "", m.feature_hash if m else ""], 1 if m else 0)
        yield seconds
        yield predictions
        yield loaded


class FnoEngine(EngineDaemon):
    """Futures and options engine."""

    name = engine = "fno"


class EquityEngine(EngineDaemon):
    """Cash equity engine."""

    name = engine = "equity"


class OptionsEngine(EngineDaemon):
    """Options strategies engine."""

    name = engine = "options"


class StrategyProcess(EngineDaemon):
    """One strategy with ``process = "own"``, alone in its process (algo-strategy@NAME): its engine's
    risk limits, its own metrics port, checkpoint and journald identity."""

    strategy: ClassVar[str]

    def __init__(self, config: FleetConfig, metrics: DaemonMetrics) -> None:
        self.engine = self._locate(config)[0]
        super().__init__(config, metrics)

    @classmethod
    def _locate(cls, config: FleetConfig) -> tuple[str, EngineSection]:
        for engine, section in config.daemons.engines():
            for i, s in enumerate(section.strategies):
                if s.name != cls.strategy:
                    continue
                if s.process != "own":
                    raise ConfigError(str(resolve_path(None)), [Problem(
                        f"daemons.{engine}.strategies.{i}.process",
                        f'is "{s.process}": algo-{engine} runs {s.name}; set process = "own" to run it alone')])
                return engine, section.model_copy(update={
                    "metrics_port": s.metrics_port, "strategies": [s.model_copy(update={"process": "engine"})]})
        raise ConfigError(str(resolve_path(None)), [Problem("daemons.*.strategies", f"no strategy named {cls.strategy!r}")])

    @classmethod
    def section_of(cls, config: FleetConfig) -> EngineSection:
        return cls._locate(config)[1]

    @property
    def unit(self) -> str:
        return f"algo-strategy@{self.strategy}"


def strategy_process(name: str) -> type[StrategyProcess]:
    return type(f"Strategy[{name}]", (StrategyProcess,), {"name": f"strategy-{name}", "strategy": name})


def fno(argv: Sequence[str] | None = None) -> None:
    serve(FnoEngine, argv)


def equity(argv: Sequence[str] | None = None) -> None:
    serve(EquityEngine, argv)


def options(argv: Sequence[str] | None = None) -> None:
    serve(OptionsEngine, argv)


def strategy(argv: Sequence[str] | None = None) -> None:
    """algo-strategy NAME [--config ...]: the unit template passes its instance name."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0].startswith("-"):
        sys.exit("usage: algo-strategy NAME [--config PATH] [--log-level LEVEL]")
    serve(strategy_process(args[0]), args[1:])
