"""algo-journal: every bus event, appended durably to one directory per day, and the day's
signals, decisions, orders and fills as CSV (daemons/journal_format/layout.py has the layout)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import date, datetime, timedelta

from prometheus_client import Counter, Histogram

from ..journal_format.layout import MARKET_PREFIXES, day_dir, day_of
from ..runtime.calendar import IST
from ..runtime.config import FleetConfig, JournalSection
from ..runtime.daemon import Daemon, serve
from ..runtime.envelope import CONTROL_SYNC, Event
from ..runtime.metrics import DaemonMetrics
from .budget import DiskBudget
from .writer import DayFiles

log = logging.getLogger("algo.journal")


class JournalDaemon(Daemon):
    """The fleet's durable record."""

    name = "journal"
    bus_acks = True  # what it was sent and had not written when killed is handed to it again (wire.py: ACK)

    def __init__(self, config: FleetConfig, metrics: DaemonMetrics) -> None:
        super().__init__(config, metrics)
        reg = metrics.registry
        self.events = Counter("algo_journal_events", "Events journaled", registry=reg)
        self.bytes = Counter("algo_journal_bytes", "Bytes appended to the journal files", registry=reg)
        self.errors = Counter("algo_journal_write_errors", "Failed writes (retried every second)", registry=reg)
        self.fsync_seconds = Histogram("algo_journal_fsync_seconds", "Time to fdatasync one batch", registry=reg,
                                       buckets=(0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5))
        self.files: DayFiles | None = None
        self.day_start = self.day_end = 0  # the journal day's bounds, ns since the epoch
        self.held = 0  # events added but not yet written
        self.count = 0
        self.urgent = False
        self.flush_scheduled = False
        self.last_sync = 0.0
        self.error: str | None = None
        self.budget = DiskBudget(reg, self.section.shed_free_mb << 20)
        self.shedding = False  # market data dropped: the disk is at its floor, or writes fail
        self.bus.subscribe("*", self._on_event)

    @property
    def section(self) -> JournalSection:
        return self.config.daemons.journal

    def _on_event(self, event: Event) -> None:
        market = event.type.startswith(MARKET_PREFIXES)
        if market and self.shedding:
            self.budget.shed()
            return
        if not self.day_start <= event.ts < self.day_end:  # a calendar lookup only when the day changes
            self._open(day_of(event.ts))
        assert self.files is not None
        if not self.files.add(event):
            return  # handed over again after a reconnect, and already written
        self.held += 1
        self.urgent = self.urgent or not market
        if not self.flush_scheduled:  # once per batch read from the bus: after its last event
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _open(self, day: date) -> None:
        if self.files is not None:
            self.files.frame()
            self._flush(force_sync=True)
            self.files.close()
        self.files = DayFiles(day_dir(self.section.directory, day))
        start = datetime.combine(day, datetime.min.time(), IST)
        self.day_start = int(start.timestamp()) * 1_000_000_000
        self.day_end = int((start + timedelta(days=1)).timestamp()) * 1_000_000_000
        log.info("journaling %s to %s", day, self.files.folder)

    def _flush(self, force_sync: bool = False) -> None:
        self.flush_scheduled = False
        if self.files is None:
            return
        now = time.monotonic()
        sync = force_sync or self.urgent or now - self.last_sync >= self.section.tick_fsync_sec
        try:
            written = self.files.write(sync=False)
            self.budget.wrote(written)
            self.bytes.inc(sum(written.values()))
            if sync:
                started = time.perf_counter()
                self.files.write(sync=True)
                self.fsync_seconds.observe(time.perf_counter() - started)
                self.last_sync, self.urgent = now, False
        except OSError as exc:
            self.errors.inc()
            if self.error is None:
                log.error("cannot write the journal in %s: %s; holding events in memory and retrying",
                          self.files.folder, exc)
            self.error = str(exc)  # a restart would lose what is held; alert on write errors instead
            self._shed_while_failing()
            return
        if self.error is not None:
            log.warning("journal writes work again after: %s", self.error)
            self.error = None
            self.shedding = self.budget.low
        self.events.inc(self.held)
        self.count += self.held
        self.held = 0
        self.bus.acknowledge()  # what it read is in the files: the broker need not keep it

    def _shed_while_failing(self) -> None:
        """Writes fail: what waits in memory is the order path's alone, market data is dropped (counted)."""
        assert self.files is not None
        dropped = self.files.shed_market()
        self.held -= dropped
        self.budget.shed(dropped)
        if not self.shedding:
            log.critical("journal writes fail: market data is shed until they work again; the order path is held "
                         "in memory and retried", extra={"STATE_FILE": str(self.files.folder)})
        self.shedding = True

    def _tick(self) -> None:
        """Once a timer period: market data gathered becomes a frame, everything is synced, the disk looked at."""
        if self.files is not None:
            self.files.frame()
        self._flush(force_sync=True)
        if self.files is not None:
            low = self.budget.check(self.files.folder, self.files.sizes())
            self.shedding = low or self.error is not None
        self.budget.shedding_gauge.set(self.shedding)

    async def run(self) -> None:
        synced = -1
        while not self.stopping.is_set():
            if self.bus.transport.reconnects != synced and self.bus.connected:
                synced = self.bus.transport.reconnects
                self._ask_for_fills()
            try:
                await asyncio.wait_for(self.stopping.wait(), max(0.05, self.section.tick_fsync_sec))
            except TimeoutError:
                self._tick()

    def _ask_for_fills(self) -> None:
        """At start and after every bus reconnect: a fill can be lost in flight (in a killed broker, or in
        this process's socket when it was killed), and the day's fills.csv must have every one. Execution
        re-sends the day's fills per engine; fills.csv keeps each fill_id once."""
        for engine, _ in self.config.daemons.engines():
            self.bus.publish(CONTROL_SYNC, {"engine": engine, "requester": self.name})

    async def drain(self) -> None:
        await asyncio.sleep(0)  # events already read are in the batch being dispatched
        if self.files is not None:
            self.files.frame()
            self._flush(force_sync=True)
            self.files.close()

    def status(self) -> str:
        failing = f"; WRITES FAILING ({self.held} events held): {self.error}" if self.error else ""
        shed = f"; SHEDDING market data ({self.budget.shed_count} events dropped)" if self.shedding else ""
        where = f"{self.files.folder}" if self.files else "no events yet"
        return f"{where}: {self.count} events journaled{failing}{shed}"


def main(argv: Sequence[str] | None = None) -> None:
    serve(JournalDaemon, argv)
