"""algo-marketdata: the paper feed. A seeded market simulator publishes ``marketdata.tick`` for
every instrument of the universe, a whole 09:15-15:30 session compressed into
``session_minutes`` of wall time. (Journal replay and Kite's live ticker come next.)"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import date, datetime
from typing import Iterable, Sequence

from prometheus_client import Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..runtime.config import ConfigError, FleetConfig, MarketdataSection, Problem
from ..runtime.daemon import Daemon, serve
from ..runtime.envelope import MARKETDATA_TICK
from ..runtime.metrics import DaemonMetrics
from .contracts import derivatives
from .instruments import Instrument, InstrumentsError, load_instruments
from .session import IST, SessionClock
from .simulator import MarketSimulator

log = logging.getLogger("algo.marketdata")


class MarketdataDaemon(Daemon):
    """Market data for the fleet: the paper simulator."""

    name = "marketdata"

    def __init__(self, config: FleetConfig, metrics: DaemonMetrics) -> None:
        super().__init__(config, metrics)
        self.sim: MarketSimulator | None = None
        self.step = 0
        self.last_tick = 0.0  # monotonic time of the last published step
        self.ticks = Counter("algo_marketdata_ticks", "Ticks published", registry=metrics.registry)
        self.instruments = Gauge("algo_marketdata_instruments", "Instruments in the feed", registry=metrics.registry)
        metrics.registry.register(TickAgeCollector(self))

    @property
    def section(self) -> MarketdataSection:
        return self.config.daemons.marketdata

    @property
    def interval(self) -> float:
        return 1.0 / self.section.steps_per_second

    async def setup(self) -> None:
        s = self.section
        day = s.session_date or datetime.now(IST).date()
        universe = self._universe(day)
        steps = max(1, round(s.session_minutes * 60 * s.steps_per_second))
        self.sim = MarketSimulator(universe, seed=s.seed, clock=SessionClock(day, steps))
        self.instruments.set(len(self.sim.instruments))
        if self.sim.expired:
            log.warning("%d expired contracts in %s left out", self.sim.expired, s.instruments)
        log.info("paper feed: %d instruments, session of %s in %g min, seed %d",
                 len(self.sim.instruments), day, s.session_minutes, s.seed)

    def _universe(self, day: date) -> list[Instrument]:
        s = self.section
        try:
            spots = load_instruments(s.instruments)
        except InstrumentsError as exc:
            raise ConfigError(str(s.instruments), [Problem("daemons.marketdata.instruments", str(exc))]) from None
        by_symbol = {i.symbol: i for i in spots}
        universe = list(spots)
        for n, d in enumerate(s.derivatives):
            spot = by_symbol.get(d.underlying)
            if spot is None:
                raise ConfigError(str(s.instruments), [Problem(
                    f"daemons.marketdata.derivatives.{n}.underlying", f"{d.underlying!r} is not in {s.instruments}")])
            universe += derivatives(spot, day, lot_size=d.lot_size, strikes=d.strikes, step=d.step)
        return universe

    async def run(self) -> None:
        assert self.sim is not None
        sim, publish = self.sim, self.bus.publish
        loop = asyncio.get_running_loop()
        due = loop.time()
        while self.step < sim.clock.steps and not self.stopping.is_set():
            for tick in sim.step():
                publish(MARKETDATA_TICK, tick, key=str(tick["token"]))
            self.step = sim.step_no
            self.ticks.inc(len(sim.instruments))
            self.last_tick = time.monotonic()
            due += self.interval
            try:  # an absolute schedule: a slow step is caught up, not accumulated
                await asyncio.wait_for(self.stopping.wait(), max(0.0, due - loop.time()))
            except asyncio.TimeoutError:
                pass
        if not self.stopping.is_set():
            log.info("session closed at %s after %d steps", sim.clock.label(self.step), self.step)
        await self.stopping.wait()

    @property
    def session_open(self) -> bool:
        return self.sim is not None and self.step < self.sim.clock.steps

    def health(self) -> str | None:
        if self.session_open and self.last_tick and time.monotonic() - self.last_tick > 10 * self.interval + 1:
            return f"no step published for {time.monotonic() - self.last_tick:.1f}s"
        return None

    def status(self) -> str:
        if self.sim is None:
            return "starting"
        state = f"session at {self.sim.clock.label(self.step)}" if self.session_open else "session closed"
        bus = "" if self.bus.connected else "; bus unreachable"
        return f"paper feed: {len(self.sim.instruments)} instruments, {state}, {self.section.steps_per_second:g} steps/s{bus}"


class TickAgeCollector(Collector):
    def __init__(self, daemon: MarketdataDaemon) -> None:
        self.daemon = daemon

    def collect(self) -> Iterable[GaugeMetricFamily]:
        last = self.daemon.last_tick
        age = time.monotonic() - last if last else float("nan")
        yield GaugeMetricFamily("algo_marketdata_tick_age_seconds", "Seconds since the last tick was published", value=age)
        yield GaugeMetricFamily("algo_marketdata_session_open", "1 while the (simulated) session runs",
                                value=int(self.daemon.session_open))


def main(argv: Sequence[str] | None = None) -> None:
    serve(MarketdataDaemon, argv)
