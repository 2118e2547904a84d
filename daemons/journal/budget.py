"""The journal's disk budget: what it writes per kind, what is left, how long that lasts, and the floor
below which it sheds market data so the order path (and execution's write-ahead log beside it) keeps
its space.

Looked at once a second from the daemon's loop (one statvfs), never per event. The projection is
the free space over the journal's own write rate of the last ``WINDOW_SEC``: the fleet's other writers
are small beside ticks. Shedding starts below ``shed_free_mb`` and ends only above ``RESUME_FACTOR``
times that, so a disk hovering at the floor does not flap.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from ..journal_format.layout import KINDS

log = logging.getLogger("algo.journal")

WINDOW_SEC = 300.0
RESUME_FACTOR = 1.5


class DiskBudget:
    def __init__(self, registry: CollectorRegistry, floor_bytes: int,
                 statvfs: Callable[[Path], os.statvfs_result] = os.statvfs) -> None:
        self.floor = floor_bytes
        self.statvfs = statvfs
        self.written = Counter("algo_journal_written_bytes", "Bytes appended to the journal, per kind (market, orders)",
                               ["kind"], registry=registry)
        self.day_bytes = Gauge("algo_journal_day_bytes", "Bytes of today's journal files on disk, per kind", ["kind"],
                               registry=registry)
        for kind in KINDS:
            self.written.labels(kind)
            self.day_bytes.labels(kind)
        self.free = Gauge("algo_journal_disk_free_bytes", "Free bytes (for an unprivileged writer) on the journal's disk",
                          registry=registry)
        self.hours_left = Gauge("algo_journal_disk_hours_to_full",
                                "Hours until the journal's disk is full at its write rate of the last 5 minutes "
                                "(+Inf when it writes nothing)", registry=registry)
        Gauge("algo_journal_shed_floor_bytes", "Free bytes below which the journal sheds market data",
              registry=registry).set(floor_bytes)
        self.shedding_gauge = Gauge("algo_journal_shedding", "1 while market data is shed (disk at its floor, or "
                                    "writes failing)", registry=registry)
        self.shed_total = Counter("algo_journal_shed_events", "Market-data events dropped to keep the order path's space",
                                  registry=registry)
        self.shed_count = 0
        self.total = 0
        self.samples: deque[tuple[float, int]] = deque()
        self.low = False  # below the floor (and not yet back above the resume mark)

    def shed(self, events: int = 1) -> None:
        self.shed_total.inc(events)
        self.shed_count += events

    def wrote(self, by_kind: dict[str, int]) -> None:
        for kind, n in by_kind.items():
            if n:
                self.written.labels(kind).inc(n)
                self.total += n

    def check(self, folder: Path, day_sizes: dict[str, int], now: float | None = None) -> bool:
        """Sample the disk; True while market data must be shed for lack of space."""
        now = time.monotonic() if now is None else now
        for kind, n in day_sizes.items():
            self.day_bytes.labels(kind).set(n)
        try:
            st = self.statvfs(folder)
        except OSError as exc:
            log.warning("cannot read the free space of %s: %s", folder, exc)
            return self.low
        free = st.f_bavail * st.f_frsize
        self.free.set(free)
        self.samples.append((now, self.total))
        while now - self.samples[0][0] > WINDOW_SEC:
            self.samples.popleft()
        since, then = self.samples[0]
        rate = (self.total - then) / (now - since) if now > since else 0.0
        self.hours_left.set(free / rate / 3600 if rate > 0 else math.inf)
        self._judge(folder, free)
        return self.low

    def _judge(self, folder: Path, free: int) -> None:
        if not self.low and free < self.floor:
            self.low = True
            log.critical("state disk at its floor: %d MB free on %s, below shed_free_mb (%d MB): market data is no "
                         "longer journaled until %d MB are free; the order path still is", free >> 20, folder,
                         self.floor >> 20, int(self.floor * RESUME_FACTOR) >> 20, extra={"STATE_FILE": str(folder)})
        elif self.low and free >= self.floor * RESUME_FACTOR:
            self.low = False
            log.warning("state disk has room again (%d MB free on %s): market data is journaled again",
                        free >> 20, folder, extra={"STATE_FILE": str(folder)})
