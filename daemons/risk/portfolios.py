"""Portfolios in algo-risk: each signal of a followed strategy decided for every portfolio at once
(``daemons/portfolios``: ``sizing.decide``), netted into one exchange order (``netting.NetOrder``,
the batch, keyed by the signal id: the approval carries it as ``allocation_key`` and each fill as
``signal_id``), and every fill of that order allocated back to the portfolios.

Durable in the allocation log, ``<state>/portfolios/<day>.wal`` (execution's checksummed log format,
``execution/wal.py``): a day's file begins with the positions carried over (``carry``); a batch is
appended (fsynced) before its approval is published, and a fill's allocation before it is applied
or published. A restart replays today's file (or rolls the newest earlier one over into today), so
the positions, the batches' unfilled lots and the fill ids allocated are what they were: a fill
execution re-sends is found allocated and skipped (never doubled), one that came while risk was down
or whose record a crash tore off is allocated when execution re-sends it (never lost), and the
recorded allocation is applied as written, not computed again. Portfolios are named by id in the
log, so the config may add, reorder or (once flat) remove portfolios between restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..execution.wal import OrderLog
from ..portfolios.book import Ints, PortfolioBook
from ..portfolios.netting import NetOrder
from ..portfolios.portfolio import Portfolio, Signal
from ..portfolios.sizing import Intents, decide
from ..runtime.config import PortfolioSection

log = logging.getLogger("algo.risk")


def portfolio(section: PortfolioSection) -> Portfolio:
    return Portfolio(section.id, section.capital, frozenset(section.strategies), section.risk_fraction,
                     section.max_lots, section.max_order_value, section.daily_loss_limit, section.enabled)


class Desk:
    """The portfolios' book, today's batches and the allocation log."""

    def __init__(self, portfolios: Sequence[PortfolioSection], folder: Path, *, fsync: bool = True) -> None:
        self.book = PortfolioBook([portfolio(p) for p in portfolios])
        self.row = {pid: n for n, pid in enumerate(self.book.ids)}
        self.followed = frozenset(s for p in portfolios for s in p.strategies)
        self.folder, self.fsync = folder, fsync
        self.log: OrderLog | None = None
        self.day = ""
        self.batches: dict[str, NetOrder] = {}  # today's, by allocation key (the signal id)
        self.approvals: dict[str, dict[str, Any]] = {}  # the approval each batch was published as
        self.allocated: dict[str, dict[str, Any]] = {}  # fill id -> its allocation record, today's
        self.unknown: set[str] = set()  # portfolio ids in the log that the config no longer has

    # -- the day's log ----------------------------------------------------------------------------

    def open(self, day: str) -> None:
        """Today's log replayed; without one, the newest earlier day's replayed and carried into today."""
        path = self.folder / f"{day}.wal"
        if not path.exists():
            earlier = sorted(p for p in self.folder.glob("*.wal") if p.stem < day) if self.folder.is_dir() else []
            if earlier:
                self._replay(earlier[-1])
        else:
            self._replay(path)
            self.day = day
            return
        self.roll(day)

    def _replay(self, path: Path) -> None:
        self.log = OrderLog(path, fsync=self.fsync)
        self.log.replay(self._apply)
        self.log.close()
        if self.unknown:
            log.warning("allocation log %s names portfolios the config no longer has (their records are left out): %s",
                        path, ", ".join(sorted(self.unknown)))
        self.log = OrderLog(path, fsync=self.fsync)  # opened again for appends

    def roll(self, day: str) -> None:
        """A new day: positions carry over at their average price, realised P&L and batches start afresh."""
        if self.log is not None:
            self.log.close()
        self.book.new_day()
        self.batches.clear()
        self.approvals.clear()
        self.allocated.clear()
        self.day = day
        self.log = OrderLog(self.folder / f"{day}.wal", fsync=self.fsync)
        carry = {symbol: {self.book.ids[n]: [int(pos.quantity[n]), float(pos.average[n])]
                          for n in np.flatnonzero(pos.quantity)}
                 for symbol, pos in self.book.positions.items() if pos.quantity.any()}
        self.log.append({"op": "carry", "day": day, "positions": carry})

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None

    def _apply(self, record: dict[str, Any]) -> None:
        """One record, at replay (and the carried positions at a roll)."""
        op = record["op"]
        if op == "carry":
            for symbol, held in record["positions"].items():
                pos = self.book.position(symbol)
                for pid, (quantity, average) in held.items():
                    if (n := self._row(pid)) is not None:
                        pos.quantity[n], pos.average[n] = quantity, average
        elif op == "batch":
            self._batch(record)
        elif op == "fill":
            units = self._units(record["units"])
            batch = self.batches[record["key"]]
            batch.remaining -= units // batch.lot_size
            self.book.fill(record["symbol"], units, float(record["price"]))
            self.allocated[record["fill_id"]] = record
        else:
            raise ValueError(f"unknown op {op!r}")

    def _row(self, pid: str) -> int | None:
        n = self.row.get(pid)
        if n is None:
            self.unknown.add(pid)
        return n

    def _units(self, by_id: dict[str, int]) -> Ints:
        units = np.zeros(len(self.book), dtype=np.int64)
        for pid, quantity in by_id.items():
            if (n := self._row(pid)) is not None:
                units[n] = quantity
        return units

    def _batch(self, record: dict[str, Any]) -> NetOrder:
        batch = NetOrder(record["symbol"], int(record["lot"]), self._units(record["intents"]))
        self.batches[record["key"]] = batch
        self.approvals[record["key"]] = record["approval"]
        return batch

    # -- the order path ---------------------------------------------------------------------------

    def follows(self, strategy: str) -> bool:
        return strategy in self.followed

    def decide(self, signal: Signal) -> Intents:
        return decide(self.book, signal)

    def record(self, key: str, symbol: str, lot: int, lots: Ints, approval: dict[str, Any]) -> None:
        """A batch, durable before its approval is published."""
        assert self.log is not None
        record = {"op": "batch", "key": key, "symbol": symbol, "lot": lot, "approval": approval,
                  "intents": {self.book.ids[n]: int(lots[n]) for n in np.flatnonzero(lots)}}
        self.log.append(record)
        self._batch(record)

    def allocate(self, fill: dict[str, Any], publish: Callable[[dict[str, Any]], object]) -> dict[str, Any] | None:
        """A fill of a batch's order shared out (netting's rule), logged, applied and published; None for
        a fill that is no batch's or was allocated before. AllocationError (nothing changed) for a fill
        the batch cannot take; OSError (nothing changed) when the log cannot be written."""
        batch = self.batches.get(str(fill.get("signal_id")))
        if batch is None or fill["fill_id"] in self.allocated:
            return None
        units = batch.allocate(int(fill["quantity"]))
        record = {"op": "fill", "fill_id": fill["fill_id"], "key": fill["signal_id"], "symbol": batch.symbol,
                  "side": fill.get("side"), "instrument_type": fill.get("instrument_type", ""),
                  "price": float(fill["price"]), "units": {self.book.ids[n]: int(units[n]) for n in np.flatnonzero(units)}}
        assert self.log is not None
        try:
            self.log.append(record)
        except OSError:
            batch.remaining += units // batch.lot_size
            raise
        self.book.fill(batch.symbol, units, record["price"])
        self.allocated[record["fill_id"]] = record
        publish(event(record))
        return record

    def standing(self) -> Ints:
        """How many portfolios stand at each ``Reason`` (OK, LOSS_LIMIT, DISABLED) whatever the signal."""
        counts: Ints = np.bincount(self.book.standing(), minlength=8).astype(np.int64)
        return counts


def event(record: dict[str, Any]) -> dict[str, Any]:
    """The ``portfolio.allocation`` payload of a fill's allocation record: the fill and each portfolio's
    signed units of it (the journal keeps it; the end-of-day report's per-portfolio P&L is built from these)."""
    return {"fill_id": record["fill_id"], "signal_id": record["key"], "symbol": record["symbol"], "side": record["side"],
            "instrument_type": record["instrument_type"], "price": record["price"], "portfolios": record["units"]}
