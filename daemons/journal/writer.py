"""One journal day on disk: events.jsonl plus the CSVs, appended and fsynced by policy.

fsync policy (see ARCHITECTURE.md#journal): a batch that holds anything but ticks and heartbeats
(signals, decisions, orders, fills, control) is fdatasync'ed before the journal reads the next
batch from the bus; batches of only ticks and heartbeats at most every ``tick_fsync_sec``. A power
cut can so lose at most that much market data, never an order or a fill.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import orjson

from ..runtime.envelope import (
    EXECUTION_FILL,
    EXECUTION_ORDER,
    RISK_APPROVED,
    RISK_BLOCKED,
    STRATEGY_SIGNAL,
    Event,
)
from .artifacts import COLUMNS, EVENTS, iso

CSV_OF = {STRATEGY_SIGNAL: "signals.csv", RISK_APPROVED: "decisions.csv", RISK_BLOCKED: "decisions.csv",
          EXECUTION_ORDER: "orders.csv", EXECUTION_FILL: "fills.csv"}


class DayFiles:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.fds = {name: os.open(folder / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                    for name in (EVENTS, *COLUMNS)}
        for name, columns in COLUMNS.items():
            if os.fstat(self.fds[name]).st_size == 0:
                os.write(self.fds[name], _csv_line(columns))
        # Execution re-sends the day's orders and fills after a restart: one row each.
        self.fill_ids = {row["fill_id"] for row in _rows(folder / "fills.csv")}
        self.order_states = {(r["client_id"], r["status"], r["filled_quantity"]) for r in _rows(folder / "orders.csv")}
        self.pending: dict[str, list[bytes]] = {name: [] for name in self.fds}
        self.dirty: set[str] = set()

    def add(self, event: Event) -> None:
        self.pending[EVENTS].append(orjson.dumps(
            {"id": event.id, "ts": event.ts, "type": event.type, "source": event.source, "seq": event.seq,
             "trace": event.trace, "key": event.key, "payload": event.payload}, option=orjson.OPT_APPEND_NEWLINE))
        name = CSV_OF.get(event.type)
        if name is None:
            return
        row = self._row(name, event)
        if row is not None:
            self.pending[name].append(_csv_line(row.get(c, "") for c in COLUMNS[name]))

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

    def write(self, sync: bool) -> int:
        """Append what is pending; fdatasync the files written since the last sync when asked.
        Returns the bytes written. OSError (disk full) leaves the pending lines for a retry."""
        written = 0
        for name, lines in self.pending.items():
            if lines:
                data = b"".join(lines)
                os.write(self.fds[name], data)
                lines.clear()
                written += len(data)
                self.dirty.add(name)
        if sync:
            for name in self.dirty:
                os.fdatasync(self.fds[name])
            self.dirty.clear()
        return written

    def close(self) -> None:
        self.write(sync=True)
        for fd in self.fds.values():
            os.close(fd)


def _csv_line(values: Any) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(["" if v is None else v for v in values])
    return out.getvalue().encode()


def _rows(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        return []
