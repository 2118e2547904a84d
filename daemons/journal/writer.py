"""One journal day on disk: events.jsonl, market.zst and the CSVs, appended and fsynced by policy.

fsync policy (see ARCHITECTURE.md#journal): a batch that holds anything but market data and
heartbeats (signals, decisions, orders, fills, control) is fdatasync'ed before the journal reads the
next batch from the bus. Market data and heartbeats gather in a block that becomes one compressed
frame of market.zst every ``FRAME_EVENTS`` events or when the daemon's timer says (``tick_fsync_sec``),
and is fdatasync'ed then. A crash or power cut can so lose at most that much market data, never an
order or a fill. A write the disk cuts short is undone (the file truncated back), so no file ever
holds half a line or half a frame before a whole one.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import os
from pathlib import Path
from typing import Any

import orjson

from ..journal_format import frames
from ..journal_format.layout import COLUMNS, EVENTS, MARKET, MARKET_PREFIXES, iso, kind_of_file
from ..runtime.envelope import (
    EXECUTION_FILL,
    EXECUTION_ORDER,
    RISK_APPROVED,
    RISK_BLOCKED,
    STRATEGY_SIGNAL,
    Event,
)

CSV_OF = {STRATEGY_SIGNAL: "signals.csv", RISK_APPROVED: "decisions.csv", RISK_BLOCKED: "decisions.csv",
          EXECUTION_ORDER: "orders.csv", EXECUTION_FILL: "fills.csv"}
SEEN_IDS = 1 << 16  # order-path ids remembered: far more than the broker replays (sessions.KEEP_BYTES)
TAIL_BYTES = 8 << 20  # of events.jsonl read at start for them: twice the most a replay can hold
FRAME_EVENTS = 1024  # a frame at most this big while the day runs: ~26 bytes a tick (22 at 4,096), a quarter of the
# events and buffers held (bench/pipeline/README.md, round 11); compaction rewrites closed days in larger frames


class DayFiles:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        # Held while the day is written: retention and compaction leave a locked day alone.
        self.lock = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(self.lock, fcntl.LOCK_SH)
        self.fds = {name: os.open(folder / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                    for name in (EVENTS, MARKET, *COLUMNS)}
        for name, columns in COLUMNS.items():
            if os.fstat(self.fds[name]).st_size == 0:
                os.write(self.fds[name], _csv_line(columns))
        # Execution re-sends the day's orders and fills after a restart: one row each.
        self.fill_ids = {row["fill_id"] for row in _rows(folder / "fills.csv")}
        self.order_states = {(r["client_id"], r["status"], r["filled_quantity"]) for r in _rows(folder / "orders.csv")}
        # The broker hands over again what this journal was sent and had not acknowledged when it went
        # away (killed, or dropped as slow): an event already written is not written twice.
        self.seen = dict.fromkeys(_tail_ids(folder / EVENTS))
        self.pending: dict[str, list[bytes]] = {name: [] for name in self.fds}
        self.dirty: set[str] = set()
        self.block = frames.Block()
        self.framed = 0  # events in the frames pending
        self.compressor = frames.compressor()

    def add(self, event: Event) -> bool:
        """Queue ``event`` for the next write; False for an order-path event already journaled."""
        if event.type.startswith(MARKET_PREFIXES):
            self.block.add(event)
            if self.block.count >= FRAME_EVENTS:
                self.frame()
            return True
        seen = self.seen
        if event.id in seen:
            return False
        seen[event.id] = None
        if len(seen) > SEEN_IDS:
            del seen[next(iter(seen))]
        self.pending[EVENTS].append(orjson.dumps(
            {"id": event.id, "ts": event.ts, "type": event.type, "source": event.source, "seq": event.seq,
             "trace": event.trace, "key": event.key, "payload": event.payload}, option=orjson.OPT_APPEND_NEWLINE))
        name = CSV_OF.get(event.type)
        if name is None:
            return True
        row = self._row(name, event)
        if row is not None:
            self.pending[name].append(_csv_line(row.get(c, "") for c in COLUMNS[name]))
        return True

    def _row(self, name: str, event: Event) -> dict[str, Any] | None:
        p, ts = event.payload, iso(event.ts)
        row = {**p, "ts": ts, "trace": event.trace}
        if name == "fills.csv":
            fill_id = str(p.get("fill_id"))
            if fill_id in self.fill_ids:
                return None
            self.fill_ids.add(fill_id)
            row["exchange_time"] = iso(p["exchange_ts"]) if p.get("exchange_ts") else ""
        elif name == "orders.csv":
            state = (str(p.get("client_id")), str(p.get("status")), str(p.get("filled_quantity")))
            if state in self.order_states:
                return None
            self.order_states.add(state)
        elif name == "decisions.csv":
            row["decision"] = "approved" if event.type == RISK_APPROVED else "blocked"
        return row

    def frame(self) -> None:
        """The market data gathered so far becomes one compressed frame, written with the next write."""
        if self.block.count:
            self.pending[MARKET].append(self.block.frame(self.compressor))
            self.framed += self.block.count
            self.block = frames.Block()

    def shed_market(self) -> int:
        """Drop the market data not yet on disk (the disk is too full for it); returns how many events."""
        dropped = self.block.count + self.framed
        self.block = frames.Block()
        self.pending[MARKET].clear()
        self.framed = 0
        return dropped

    def write(self, sync: bool) -> dict[str, int]:
        """Append what is pending; fdatasync the files written since the last sync when asked.
        Returns the bytes written per kind. OSError (disk full) leaves what failed pending for a retry."""
        written = {"market": 0, "orders": 0}
        for name, lines in self.pending.items():
            if lines:
                data = b"".join(lines)
                _append(self.fds[name], data)
                lines.clear()
                if name == MARKET:
                    self.framed = 0
                written[kind_of_file(name)] += len(data)
                self.dirty.add(name)
        if sync:
            for name in self.dirty:
                os.fdatasync(self.fds[name])
            self.dirty.clear()
        return written

    def sizes(self) -> dict[str, int]:
        """Bytes on disk of the day's files, per kind."""
        out = {"market": 0, "orders": 0}
        for name, fd in self.fds.items():
            out[kind_of_file(name)] += os.fstat(fd).st_size
        return out

    def close(self) -> None:
        self.frame()
        self.write(sync=True)
        for fd in self.fds.values():
            os.close(fd)
        os.close(self.lock)


def _append(fd: int, data: bytes) -> None:
    """All of ``data`` at the end of the file, or nothing: a write the disk cuts short is truncated away."""
    before = os.lseek(fd, 0, os.SEEK_END)
    written = os.write(fd, data)
    if written < len(data):
        os.ftruncate(fd, before)
        raise OSError(errno.ENOSPC, f"No space left on device (wrote {written} of {len(data)} bytes, undone)")


def _csv_line(values: Any) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(["" if v is None else v for v in values])
    return out.getvalue().encode()


def _tail_ids(path: Path) -> list[str]:
    """The ids of the events in the last TAIL_BYTES of events.jsonl, oldest first (a damaged line is skipped)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - TAIL_BYTES))
            tail = f.read()
    except FileNotFoundError:
        return []
    lines = tail.split(b"\n")
    if size > TAIL_BYTES:
        lines = lines[1:]  # the first one is cut
    ids = []
    for line in lines:
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("id"), str):
            ids.append(record["id"])
    return ids


def _rows(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        return []
