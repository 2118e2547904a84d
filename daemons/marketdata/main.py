"""algo-marketdata: the paper feed. Either a seeded market simulator publishes ``marketdata.tick``
for every instrument of the universe, a whole 09:15-15:30 session compressed into
``session_minutes`` of wall time, or a recorded journal day / tick CSV is replayed
(``feed = "replay"``), or in live mode Kite's ticker streams the configured universe
(``feed = "kite"``, kite_feed.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..features.cache import Ring
from ..features.codec import snapshot
from ..features.indicators import Periods
from ..features.stage import FeatureStage
from ..runtime.calendar import IST, last_trading_day
from ..runtime.config import ConfigError, FleetConfig, MarketdataSection, Problem, missing_credentials, resolve_path
from ..runtime.daemon import Daemon, pause, serve
from ..runtime.envelope import FEATURES_BAR, FEATURES_SNAPSHOT, FEATURES_SYNC, MARKETDATA_OHLC, MARKETDATA_TICK, Event, tick_key
from ..runtime.metrics import DaemonMetrics
from ..strategies import KINDS, Strategy, build, watched
from .contracts import derivatives
from .instruments import Instrument, InstrumentsError, load_instruments
from .session import SessionClock
from .simulator import MarketSimulator

if TYPE_CHECKING:
    from .kite_feed import KiteFeed

log = logging.getLogger("algo.marketdata")


# Ticks of one step published between two turns of the event loop: a 9,000-instrument step would
# otherwise be stamped whole (~50 ms) before its first tick left the process.
STEP_SLICE = 256
# features.snapshot answers go out this many symbols at a time (~300 KB at 120 bars), this long apart:
# ~1,600 symbols/s, so a request for a whole 9,000-symbol universe (~160 MB) never fills the feed's
# outbox (ticks would be dropped) nor a subscriber's buffer at the broker (the journal would be cut off).
SNAPSHOT_SLICE = 16
SNAPSHOT_PAUSE_SEC = 0.01
SPREAD_SEC = 0.002  # with spread_steps: a step's ticks go out in slices this far apart (or one tick each)
# The closed bars of symbols no strategy reads (the journal's and the bridges') go out STEP_SLICE at a time this
# far apart: ~2.5 ms of the broker's work a slice, so a tick published meanwhile waits behind one slice, not
# behind a 9,000-symbol universe's minute (~90 ms of it at once). That minute then takes ~0.18 s to go out.
REST_OF_BARS_PAUSE_SEC = 0.005


def step_slices(n: int, start: float, interval: float, spread: bool) -> Iterator[tuple[int, int, float]]:
    """(first, stop, when) of each slice of a step of ``n`` ticks due at ``start``: back to back by
    default, or spread evenly over the step's ``interval`` as a real feed delivers a market's ticks.
    One at a time: spread over a long step they are thousands, alive for the whole step as a list."""
    count = -(-n // STEP_SLICE)
    if spread:
        count = max(count, min(n, int(interval / SPREAD_SEC)))
    count = max(count, 1)
    return ((k * n // count, (k + 1) * n // count, start + (k * interval / count if spread else 0.0))
            for k in range(count))


def bar_symbols(config: FleetConfig) -> frozenset[str] | None:
    """What the fleet's strategies that read bars watch (``Strategy.watches``): the symbols whose history
    the feature cache keeps. None when one of them watches every symbol."""
    readers: list[Strategy] = []
    for _, section in config.daemons.engines():
        for s in section.strategies:
            if not s.enabled or s.kind not in KINDS or not KINDS[s.kind].reads_bars:
                continue
            try:
                readers.append(build(s.kind, s.name, s.params))
            except ValueError:
                continue  # its engine refuses to start with it; `algoctl config validate` names the problem
    return watched(readers)


class MarketdataDaemon(Daemon):
    """Market data for the fleet: the paper simulator."""

    name = "marketdata"

    def __init__(self, config: FleetConfig, metrics: DaemonMetrics) -> None:
        super().__init__(config, metrics)
        self.sim: MarketSimulator | None = None
        self.feed: KiteFeed | None = None
        self.step = 0
        self.replayed = 0
        self.replay_done = False
        self.market_ns = 0  # exchange time of the last tick published
        self.last_tick = 0.0  # monotonic time of the last published step
        self.ticks = Counter("algo_marketdata_ticks", "Ticks published", registry=metrics.registry)
        self.instruments = Gauge("algo_marketdata_instruments", "Instruments in the feed", registry=metrics.registry)
        metrics.registry.register(TickAgeCollector(self))
        self.stage: FeatureStage | None = None
        self._bars_closed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []  # bars and snapshot answers, while run() runs
        self._syncs: deque[tuple[str, str, list[tuple[str, Ring]]]] = deque()  # requester, trace, rings to send
        self._sync_wanted = asyncio.Event()
        s = self.section
        if s.features:
            self.stage = FeatureStage(s.bar_seconds, s.feature_history, Periods(
                s.ema_fast_bars, s.ema_slow_bars, s.rsi_bars, s.atr_bars, s.volatility_bars), bar_symbols(config))
            self.bus.subscribe(FEATURES_SYNC, self._on_sync)
            metrics.registry.register(FeaturesCollector(self.stage))
            self.snapshots = Counter("algo_marketdata_feature_snapshots", "features.snapshot events sent (one per symbol "
                                     "asked for)", registry=metrics.registry)
            self.syncs_refused = Counter("algo_marketdata_feature_syncs_refused", "features.sync requests refused as "
                                         "malformed", registry=metrics.registry)

    @property
    def section(self) -> MarketdataSection:
        return self.config.daemons.marketdata

    async def reload(self, config: FleetConfig) -> None:
        """A strategy that reads bars added or changed: its symbols' history is kept from now on."""
        self.config = config
        if self.stage is not None:
            self.stage.cache.want(bar_symbols(config))

    @property
    def interval(self) -> float:
        return 1.0 / self.section.steps_per_second

    async def setup(self) -> None:
        s = self.section
        if s.feed == "kite":
            await self._setup_kite()
            return
        if s.feed == "replay":
            from .replay import ReplayError, source_file  # the journal's reader and zstandard (~0.4 MB): a replay's only

            assert s.replay_from is not None  # the config's cross-check demands it
            try:
                file = source_file(s.replay_from)
            except ReplayError as exc:
                raise ConfigError(str(s.replay_from), [Problem("daemons.marketdata.replay_from", str(exc))]) from None
            log.info("replaying %s at %gx", file, s.replay_speed)
            return
        day = s.session_date or last_trading_day(datetime.now(IST).date(), self.config.market.holidays)
        universe = self._universe(day)
        steps = max(1, round(s.session_minutes * 60 * s.steps_per_second))
        self.sim = MarketSimulator(universe, seed=s.seed, clock=SessionClock(day, steps, self.config.market))
        self.instruments.set(len(self.sim.instruments))
        if self.sim.expired:
            log.warning("%d expired contracts in %s left out", self.sim.expired, s.instruments)
        log.info("paper feed: %d instruments, session of %s in %g min, seed %d",
                 len(self.sim.instruments), day, s.session_minutes, s.seed)

    async def _setup_kite(self) -> None:
        """The day's universe from Kite's instruments dump (cached in the state directory), then the feed."""
        from kiteconnect import KiteConnect  # live mode only: it brings Twisted along
        from kiteconnect.exceptions import TokenException

        from .kite_feed import KiteFeed
        from .universe import UniverseError, load_dump, resolve

        s, kite = self.section, self.config.kite
        source = str(resolve_path(None))
        if missing := missing_credentials(self.config, "api_key", "access_token"):
            raise ConfigError(source, missing)
        assert kite.api_key is not None and kite.access_token is not None  # missing_credentials said so
        day = datetime.now(IST).date()
        client = KiteConnect(kite.api_key.get_secret_value(), kite.access_token.get_secret_value(), root=kite.root,
                             timeout=kite.timeout_sec)
        try:
            dump = await asyncio.to_thread(load_dump, client, self.state_path(f"instruments-{day}.csv"))
            instruments = resolve(s.universe, dump, day)
            self.feed = KiteFeed(s, kite, instruments, self._publish, asyncio.get_running_loop(),
                                 market=self.config.market, connections=self._connections())
        except UniverseError as exc:
            raise ConfigError(source, [Problem("daemons.marketdata.universe", str(exc))]) from None
        except TokenException:  # an expired token cannot fetch the dump: no restart loop until a login
            raise ConfigError(source, [Problem("kite.access_token", "Kite refused it (expired or revoked): run "
                                               "`algoctl login`")]) from None
        self.instruments.set(self.feed.instruments)
        self.metrics.registry.register(FeedCollector(self.feed))
        log.info("live feed: %d instruments of %d in the universe, %s mode", self.feed.instruments,
                 len(s.universe), s.ticker_mode)

    def _connections(self) -> int:
        """The API key's ticker connections the feed may hold: live execution keeps one for order updates."""
        reserved = 1 if self.config.daemons.execution.broker == "kite" else 0  # cross_check: max_connections >= 2
        return self.config.kite.max_connections - reserved

    def _publish(self, ticks: list[dict[str, Any]]) -> None:
        """Called on the loop by the live feed with the ticks of one message from Kite (never none)."""
        self._send(ticks, [tick_key(tick) for tick in ticks])
        self.ticks.inc(len(ticks))
        self.market_ns = ticks[-1]["exchange_ts"]
        self.last_tick = time.monotonic()

    def _send(self, ticks: list[dict[str, Any]], keys: list[str]) -> None:
        """Ticks published and written before the bar stage works on any of them: the last of a Kite message
        or a simulated step's slice is not stamped late by the bars of those before it."""
        publish = self.bus.publish
        for tick, key in zip(ticks, keys, strict=True):
            publish(MARKETDATA_TICK, tick, key=key)
        stage = self.stage
        if stage is None:
            return
        self.bus.flush()  # the ticks leave before the bar stage works on them (~0.1 ms a slice at 10k/s)
        closed = False
        for tick, key in zip(ticks, keys, strict=True):
            closed |= stage.on_tick(tick, key)
        if closed:
            self._bars_closed.set()

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
        if self.stage is not None:
            self._tasks = [asyncio.create_task(self._publish_bars()), asyncio.create_task(self._answer_syncs())]
        try:
            await self._run_feed()
        finally:
            for task in self._tasks:
                task.cancel()

    async def _run_feed(self) -> None:
        if self.feed is not None:
            self.feed.start()
            await self.stopping.wait()
            self.feed.stop()
            return
        if self.section.feed == "replay":
            await self._replay()
        else:
            await self._simulate()
        await self.stopping.wait()

    async def _replay(self) -> None:
        from .replay import ReplayError, ticks

        s = self.section
        assert s.replay_from is not None
        publish, loop = self.bus.publish, asyncio.get_running_loop()
        stage, closed = self.stage, self._bars_closed
        start = first = None
        try:
            for pace_ns, tick in ticks(s.replay_from):
                if first is None:
                    start, first = loop.time(), pace_ns
                assert start is not None
                wait = start + (pace_ns - first) / 1e9 / s.replay_speed - loop.time()
                if wait > 0.001:
                    try:
                        await asyncio.wait_for(self.stopping.wait(), wait)
                        return
                    except TimeoutError:
                        pass
                elif self.replayed % 512 == 0:
                    await asyncio.sleep(0)  # let the bus flush and the watchdog run between bursts
                    if self.stopping.is_set():
                        return
                key = tick_key(tick)
                publish(MARKETDATA_TICK, tick, key=key)
                if stage is not None and stage.on_tick(tick, key):
                    closed.set()
                self.replayed += 1
                self.ticks.inc()
                self.market_ns = tick["exchange_ts"]
                self.last_tick = time.monotonic()
        except ReplayError as exc:
            log.error("replay stopped: %s", exc)
            self.replay_done = True
            return
        self.replay_done = True
        self._session_over()
        log.info("replay of %s finished: %d ticks", s.replay_from, self.replayed)

    async def _simulate(self) -> None:
        assert self.sim is not None
        sim = self.sim
        loop = asyncio.get_running_loop()
        due = loop.time()
        keys: list[str] = []  # each instrument's frame key: a step ticks sim.instruments in the same order
        while self.step < sim.clock.steps and not self.stopping.is_set():
            count = sim.advance()
            for first, stop, when in step_slices(count, due, self.interval, self.section.spread_steps):
                await asyncio.sleep(max(0.0, when - loop.time()))  # at least a turn of the loop between slices
                if self.stopping.is_set():
                    return
                ticks = sim.ticks(first, stop)  # made slice by slice: a step's ticks are never all held at once
                if len(keys) < stop:
                    keys[first:] = [tick_key(tick) for tick in ticks]
                self._send(ticks, keys[first:stop])
            self.step = sim.step_no
            self.ticks.inc(len(sim.instruments))
            self.last_tick = time.monotonic()
            due += self.interval
            await pause(self.stopping, max(0.0, due - loop.time()))  # an absolute schedule: a slow step is caught up
        if not self.stopping.is_set():
            self._session_over()
            log.info("session closed at %s after %d steps", sim.clock.label(self.step), self.step)

    def _session_over(self) -> None:
        """The last bars close with the session (a live feed's close when the next session's first tick comes)."""
        if self.stage is not None:
            self.stage.flush()
            self._bars_closed.set()

    async def _publish_bars(self) -> None:
        """Closed bars and their features, STEP_SLICE at a time between ticks: those of symbols a strategy reads
        at once, in the order they closed, then the rest of the universe's, paced (REST_OF_BARS_PAUSE_SEC)."""
        assert self.stage is not None
        stage, publish, closed = self.stage, self.bus.publish, self._bars_closed
        while True:
            await closed.wait()
            closed.clear()
            while stage.pending:
                read = bool(stage.first)
                for _ in range(min(STEP_SLICE, len(stage.first) if read else stage.pending)):
                    key, ohlc, features = stage.close_next()
                    publish(MARKETDATA_OHLC, ohlc, key=key)
                    publish(FEATURES_BAR, features, key=key)
                await asyncio.sleep(0 if read else REST_OF_BARS_PAUSE_SEC)

    def _on_sync(self, event: Event) -> None:
        """A strategy that started late asks for recent history: one ``features.snapshot`` per symbol it
        names (every symbol when it names none), addressed to it."""
        assert self.stage is not None
        symbols = event.payload.get("symbols")
        requester = event.payload.get("requester") or event.source
        if symbols is not None and not (isinstance(symbols, list) and all(isinstance(x, str) for x in symbols)):
            self.syncs_refused.inc()
            log.warning("features.sync from %s refused: symbols must be a list of names, got %.100r", event.source,
                        symbols, extra={"TRACE_ID": event.trace})
            return
        if symbols is not None:
            self.stage.cache.want(frozenset(symbols))  # not kept so far: from now on (a request for all changes nothing)
        rings = self.stage.cache.select(symbols)
        self._syncs.append((str(requester), event.trace, rings))
        self._sync_wanted.set()
        log.info("features.snapshot to %s: %d symbols", requester, len(rings), extra={"TRACE_ID": event.trace})

    async def _answer_syncs(self) -> None:
        """Requests in turn, each SNAPSHOT_SLICE symbols at a time (a snapshot is the ring as it is when sent)."""
        while True:
            await self._sync_wanted.wait()
            self._sync_wanted.clear()
            while self._syncs:
                requester, trace, rings = self._syncs.popleft()
                for at in range(0, len(rings), SNAPSHOT_SLICE):
                    for key, ring in rings[at:at + SNAPSHOT_SLICE]:
                        self.bus.publish(FEATURES_SNAPSHOT, snapshot(ring, requester, self.section.bar_seconds), key=key,
                                         trace=trace)
                        self.snapshots.inc()
                    await asyncio.sleep(SNAPSHOT_PAUSE_SEC)

    @property
    def session_open(self) -> bool:
        if self.feed is not None:
            return self.feed.market_open()
        if self.section.feed == "replay":
            return not self.replay_done
        return self.sim is not None and self.step < self.sim.clock.steps

    def health(self) -> str | None:
        for task in self._tasks:  # the watchdog restarts the feed rather than let it run without them
            if task.done() and not task.cancelled() and (exc := task.exception()) is not None:
                return f"bars and features stopped: {exc!r}"
        if self.feed is not None:
            return self.feed.health()  # a dead or silent connection in market hours stops the watchdog
        if self.section.feed == "replay":
            return None  # a recording may pause for as long as it likes
        if self.session_open and self.last_tick and time.monotonic() - self.last_tick > 10 * self.interval + 1:
            return f"no step published for {time.monotonic() - self.last_tick:.1f}s"
        return None

    def status(self) -> str:
        if self.feed is not None:
            return self.feed.status() + ("" if self.bus.connected else "; bus unreachable")
        if self.section.feed == "replay":
            at = datetime.fromtimestamp(self.market_ns / 1e9, IST).strftime("%Y-%m-%d %H:%M:%S IST") if self.market_ns else "-"
            state = "finished" if self.replay_done else f"at {at}"
            return f"replay of {self.section.replay_from} at {self.section.replay_speed:g}x: {self.replayed} ticks, {state}"
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


class FeaturesCollector(Collector):
    """Bars closed and ticks left out of them, read from the stage at scrape time."""

    def __init__(self, stage: FeatureStage) -> None:
        self.stage = stage

    def collect(self) -> Iterable[CounterMetricFamily]:
        yield CounterMetricFamily("algo_marketdata_bars", "Bars closed (marketdata.ohlc + features.bar published)",
                                  value=self.stage.closed)
        skipped = CounterMetricFamily("algo_marketdata_bar_skipped_ticks", "Ticks published but left out of the bars",
                                      labels=["reason"])
        skipped.add_metric(["late"], self.stage.candles.late)  # exchange time in a bar already closed
        skipped.add_metric(["malformed"], self.stage.candles.malformed)  # fields of the wrong type
        yield skipped


class FeedCollector(Collector):
    """Live mode only: the feed's counts, read at scrape time (the reactor thread writes them)."""

    def __init__(self, feed: KiteFeed) -> None:
        self.feed = feed

    def collect(self) -> Iterable[CounterMetricFamily]:
        yield CounterMetricFamily("algo_marketdata_reconnects", "Ticker WebSocket reconnects",
                                  value=self.feed.reconnects)
        yield CounterMetricFamily("algo_marketdata_malformed_packets", "Ticker packets skipped as malformed",
                                  value=self.feed.malformed)


def main(argv: Sequence[str] | None = None) -> None:
    serve(MarketdataDaemon, argv)
