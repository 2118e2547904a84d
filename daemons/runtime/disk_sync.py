"""Every sync of the state the order path writes durably, timed.

Execution makes each order's write-ahead record durable before the order goes out, risk each fill, an engine its
checkpoint: each an fsync on the daemon's event loop, so a disk that stalls holds whatever event arrives
meanwhile. On the project's 2-vCPU VMs an fdatasync takes ~0.3 ms at p50 but stalls past 50 ms about once a
minute, up to ~0.55 s (bench/pipeline/README.md, round 22), the length of the rare slow chains seen there. So
every sync is in ``algo_disk_sync_seconds`` and a slow one is a warning in the journal naming the file: a
chain's stall is then told from the fleet's own.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from prometheus_client import Histogram

log = logging.getLogger("algo.disk")

SLOW_SEC = 0.05  # a sync this long is a stall worth a line: ~150x this disk's p50
LINE_EVERY_SEC = 10.0  # at most one line this often, counting the stalls since the last (a failing disk stalls often)

SYNC_SECONDS = Histogram(
    "algo_disk_sync_seconds", "fsync/fdatasync of the daemon's durable state (write-ahead logs, checkpoints): the "
    "time the disk held the event loop", buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0), registry=None)


class _Stalls:
    """The slow syncs not yet reported, and when the last line went out."""

    def __init__(self) -> None:
        self.count = 0
        self.worst = 0.0
        self.worst_path: Path | None = None
        self.last_line = -LINE_EVERY_SEC

    def note(self, path: Path, seconds: float, now: float) -> None:
        self.count += 1
        if seconds >= self.worst:
            self.worst, self.worst_path = seconds, path
        if now - self.last_line < LINE_EVERY_SEC:
            return
        if self.count == 1:
            log.warning("a sync of %s took %.0f ms: the disk held this daemon's event loop meanwhile", path,
                        seconds * 1000, extra={"STATE_FILE": str(path)})
        else:
            log.warning("%d syncs took %.0f ms or more since the last such line, the slowest %.0f ms (%s): the disk "
                        "held this daemon's event loop meanwhile", self.count, SLOW_SEC * 1000, self.worst * 1000,
                        self.worst_path, extra={"STATE_FILE": str(self.worst_path)})
        self.count, self.worst, self.worst_path, self.last_line = 0, 0.0, None, now


STALLS = _Stalls()


def fdatasync(fd: int, path: Path) -> None:
    """``os.fdatasync``, timed (OSError as it raises: a refused sync is not a stall)."""
    started = time.perf_counter()
    os.fdatasync(fd)
    _observe(path, time.perf_counter() - started)


def fsync(fd: int, path: Path) -> None:
    """``os.fsync``, timed (a new file's data and size, or a folder's entries after a rename)."""
    started = time.perf_counter()
    os.fsync(fd)
    _observe(path, time.perf_counter() - started)


def _observe(path: Path, seconds: float) -> None:
    SYNC_SECONDS.observe(seconds)
    if seconds >= SLOW_SEC:
        STALLS.note(path, seconds, time.monotonic())
