"""A log that outlives a full or failing state disk: what it cannot write now waits in memory, in
order, and is written first the next time (an append, or ``flush`` from the daemon's loop).

Used for records that follow a fact already in the world (the broker's answer, a fill, a book
change): losing them is not an option, and the broker still has the truth if the process dies
before the disk frees up. A record that must be written before anything happens (an order's
intent) goes through ``write_now``, which raises instead of waiting, and already when the disk has
less than ``floor`` bytes free: new work stops while there is still room for what follows the old.
``durable`` flushes it to the disk at once, raising if the disk refuses: Kite's place call waits for that.

Records are written at once (a killed process loses none: they are in the page cache) and fdatasync'ed
together SYNC_AFTER_SEC later: the order event does not wait for disk flushes, nor does an approval that
follows within that time (a reversal's second, a straddle's other leg: it waited ~0.5-1 ms behind them when
they ran right after the turn). A power cut can so lose the last ~2 ms of the paper broker's book and of
this log together, or of answers and fills that Kite still has (reconciliation adopts them by tag at start).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections import deque
from typing import Any

from ..runtime.wal import RecordLog

log = logging.getLogger("algo.execution")

SYNC_AFTER_SEC = 0.002


class BackloggedLog:
    def __init__(self, wal: RecordLog, outage: str, level: int, floor: int = 0) -> None:
        self.wal = wal
        self.floor = floor  # free bytes below which write_now refuses
        self.outage = outage  # the one line an outage logs: "%s" gets the file and the error
        self.level = level
        self.pending: deque[dict[str, Any]] = deque()  # in memory, not on disk yet
        self.trouble = ""  # the error that holds records back; "" while everything is on disk
        self._sync_due = False

    def write_now(self, record: dict[str, Any]) -> None:
        """Written when this returns (after whatever was waiting), flushed SYNC_AFTER_SEC later or by
        ``durable``; or OSError and nothing kept."""
        written = self._drain()
        if self.pending:
            raise OSError(self.trouble)
        try:
            self._room()
            self.wal.append(record, sync=False)
        except OSError as exc:
            self._failed(exc)
            raise
        self._sync_soon()
        self._recovered(written + 1)

    def durable(self) -> None:
        """Everything written so far on the disk now; OSError (an outage, like a failed write) if it refuses."""
        try:
            self.wal.sync()
        except OSError as exc:
            self._failed(exc)
            raise

    def append(self, record: dict[str, Any]) -> None:
        """On disk if it can be, else kept in memory until it can: never lost while we run."""
        self.pending.append(record)
        self.flush()

    def _sync_soon(self) -> None:
        """fdatasync SYNC_AFTER_SEC from now (what is written meanwhile goes with it): the turn's events are out
        by then, and so is the next order of the same decision. Without a loop (a tool), at once."""
        if self._sync_due or not self.wal.unsynced:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.sync()
            return
        self._sync_due = True
        loop.call_later(SYNC_AFTER_SEC, self.sync)

    def sync(self) -> None:
        """What was written without fdatasync, flushed to the disk; a refusal is an outage like a failed write."""
        self._sync_due = False
        try:
            self.durable()
        except OSError:
            pass  # logged as the outage it is; the next sync tries again

    def flush(self) -> bool:
        """Write what waits, in order; True when nothing waits any more."""
        written = self._drain()
        if self.wal.unsynced:
            self._sync_soon()
        if self.pending:
            return False
        if written:  # only a write that worked ends an outage (an intent refused leaves nothing to retry)
            self._recovered(written)
        return True

    def _room(self) -> None:
        if not self.floor:
            return
        st = os.statvfs(self.wal.path.parent)
        free = st.f_bavail * st.f_frsize
        if free < self.floor:
            raise OSError(errno.ENOSPC, f"{free >> 20} MB free, below the floor of {self.floor >> 20} MB")

    def _drain(self) -> int:
        written = 0
        while self.pending:
            try:
                self.wal.append(self.pending[0], sync=False)
            except OSError as exc:
                self._failed(exc)
                break
            self.pending.popleft()
            written += 1
        return written

    def _recovered(self, written: int) -> None:
        if self.trouble:
            log.info("state disk writable again: %s takes records (%d written since)", self.wal.path, written,
                     extra={"STATE_FILE": str(self.wal.path)})
            self.trouble = ""

    def _failed(self, exc: OSError) -> None:
        if not self.trouble:  # one line per outage
            log.log(self.level, self.outage, f"{self.wal.path}: {exc.strerror or exc}",
                    extra={"STATE_FILE": str(self.wal.path)})
        self.trouble = exc.strerror or str(exc)

    def close(self) -> None:
        self.flush()
        self.sync()
        self.wal.close()
