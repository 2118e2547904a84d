"""The segment engines, algo-fno, algo-equity and algo-options: each hosts its configured
strategies, feeds them ticks and fills, and publishes what they decide as ``strategy.signal``.

Strategy state is checkpointed to the unit's StateDirectory every ``checkpoint_sec`` and on
stop, and restored on start, so a crash or restart continues where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Sequence

from prometheus_client import Counter, Gauge

from ..runtime import checkpoint
from ..runtime.config import EngineSection, FleetConfig
from ..runtime.daemon import Daemon, serve
from ..runtime.envelope import (
    CONTROL_PAUSE,
    CONTROL_RESUME,
    EXECUTION_FILL,
    MARKETDATA_TICK,
    STRATEGY_SIGNAL,
    Event,
)
from ..runtime.metrics import DaemonMetrics
from .strategies import Fill, Strategy, Tick, build

log = logging.getLogger("algo.engine")


class EngineDaemon(Daemon):
    """Hosts strategies; the subclasses only name the engine (its config section and unit)."""

    def __init__(self, config: FleetConfig, metrics: DaemonMetrics) -> None:
        super().__init__(config, metrics)
        self.strategies: dict[str, Strategy] = {
            s.name: build(s.kind, s.name, s.params) for s in self.section.strategies if s.enabled
        }
        self.paused: set[str] = set()
        self.published = 0
        self.last_tick = 0.0
        self.state_file = self.state_path("checkpoint.json")
        self.signals = Counter("algo_engine_signals", "Signals published", ["strategy"], registry=metrics.registry)
        self.paused_gauge = Gauge("algo_engine_strategy_paused", "1 while a strategy is paused", ["strategy"],
                                  registry=metrics.registry)
        for name in self.strategies:
            self.signals.labels(name)
            self.paused_gauge.labels(name).set(0)
        self.bus.subscribe(MARKETDATA_TICK, self._on_tick)
        self.bus.subscribe(EXECUTION_FILL, self._on_fill)
        self.bus.subscribe("control.*", self._on_control)

    @property
    def section(self) -> EngineSection:
        section: EngineSection = getattr(self.config.daemons, self.name)
        return section

    async def setup(self) -> None:
        saved = checkpoint.read(self.state_file)
        if saved:
            for name, state in saved.get("strategies", {}).items():
                if name in self.strategies:
                    self.strategies[name].restore(state)
            self.paused = set(saved.get("paused", [])) & set(self.strategies)
            for name in self.paused:
                self.paused_gauge.labels(name).set(1)
            log.info("%s restored %d strategies from %s", self.name, len(saved.get("strategies", {})), self.state_file)

    async def run(self) -> None:
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(self.stopping.wait(), self.section.checkpoint_sec)
            except asyncio.TimeoutError:
                self.save()

    async def drain(self) -> None:
        self.save()

    def save(self) -> None:
        checkpoint.write(self.state_file, {
            "strategies": {name: s.snapshot() for name, s in self.strategies.items()},
            "paused": sorted(self.paused),
        })

    def _on_tick(self, event: Event) -> None:
        self.last_tick = time.monotonic()
        tick = Tick.from_payload(event.payload)
        for name, strategy in self.strategies.items():
            for signal in strategy.on_tick(tick):
                if name in self.paused and signal.entry:
                    continue  # paused: no new exposure; exits still go out
                payload = {"engine": self.name, **signal._asdict(), "tick_price": tick.last_price}
                published = self.bus.publish(STRATEGY_SIGNAL, payload, key=signal.symbol, trace=event.trace)
                self.signals.labels(name).inc()
                self.published += 1
                log.info("%s %d %s: %s", signal.side, signal.quantity, signal.symbol, signal.reason,
                         extra={"ENGINE": self.name, "STRATEGY": name, "SYMBOL": signal.symbol,
                                "TRACE_ID": published.trace})

    def _on_fill(self, event: Event) -> None:
        p = event.payload
        strategy = self.strategies.get(p.get("strategy", ""))
        if strategy is not None:
            strategy.on_fill(Fill(p["symbol"], p["side"], p["quantity"], p["price"]))

    def _on_control(self, event: Event) -> None:
        if event.type not in (CONTROL_PAUSE, CONTROL_RESUME):
            return
        engine, only = event.payload.get("engine"), event.payload.get("strategy")
        if engine not in (None, self.name):
            return
        names = [only] if only in self.strategies else ([] if only else list(self.strategies))
        for name in names:
            (self.paused.add if event.type == CONTROL_PAUSE else self.paused.discard)(name)
            self.paused_gauge.labels(name).set(int(name in self.paused))
            log.warning("%s %s", name, "paused: entries blocked" if name in self.paused else "resumed",
                        extra={"ENGINE": self.name, "STRATEGY": name, "TRACE_ID": event.trace})

    def status(self) -> str:
        age = f"{time.monotonic() - self.last_tick:.1f}s ago" if self.last_tick else "none yet"
        paused = f" ({len(self.paused)} paused)" if self.paused else ""
        return f"{len(self.strategies)} strategies{paused}, {self.published} signals, last tick {age}"


class FnoEngine(EngineDaemon):
    """Futures and options engine."""

    name = "fno"


class EquityEngine(EngineDaemon):
    """Cash equity engine."""

    name = "equity"


class OptionsEngine(EngineDaemon):
    """Options strategies engine."""

    name = "options"


def fno(argv: Sequence[str] | None = None) -> None:
    serve(FnoEngine, argv)


def equity(argv: Sequence[str] | None = None) -> None:
    serve(EquityEngine, argv)


def options(argv: Sequence[str] | None = None) -> None:
    serve(OptionsEngine, argv)
