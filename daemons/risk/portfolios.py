"""Portfolios in algo-risk: each signal of a followed strategy decided for every portfolio at once
(``daemons/portfolios``: ``sizing.decide``), netted into one exchange order (``netting.NetOrder``,
the batch, keyed by the signal id: the approval carries it as ``allocation_key`` and each fill as
``signal_id``), and every fill of that order allocated back to the portfolios.

Durable in the allocation log, ``<state>/portfolios/<day>.wal`` (execution's checksummed log format,
``runtime/wal.py``; the last ``KEEP_DAYS`` days kept): a day's file begins with the portfolios' ids
and the positions carried over (``carry``); a batch is appended (fsynced) before its approval is
published, and a fill's allocation before it is applied or published. A restart replays today's file
(or rolls the newest earlier one over into today), so the positions, the batches' unfilled lots and
the fill ids allocated are what they were: a fill execution re-sends is found allocated and skipped
(never doubled), one that came while risk was down or whose record a crash tore off is allocated when
execution re-sends it (never lost), and the recorded allocation is applied as written, not computed
again. Records hold one value per portfolio in the order of the log's ids (an ``ids`` record follows
when the config changed), so the config may add, reorder or (once flat) remove portfolios between
restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..portfolios.book import Ints, PortfolioBook
from ..portfolios.netting import NetOrder
from ..portfolios.portfolio import Portfolio, Reason, Signal
from ..portfolios.sizing import Intents, decide
from ..runtime.config import PortfolioSection
from ..runtime.wal import RecordLog

log = logging.getLogger("algo.risk")
KEEP_DAYS = 5  # day files kept; a new day needs only the one before (the journal keeps every allocation)


def portfolio(section: PortfolioSection) -> Portfolio:
    return Portfolio(section.id, section.capital, frozenset(section.strategies), section.risk_fraction,
                     section.max_lots, section.max_order_value, section.daily_loss_limit, section.enabled)


class Desk:
    """The portfolios' book, today's batches and the allocation log.

    Records carry one value per portfolio in the order of the log's ``ids`` (the ``carry`` record's,
    or a later ``ids`` record's when the config changed), as plain lists: encoding 10,000 numbers that
    way costs a fraction of naming each portfolio (``bench/portfolios/path.py``)."""

    def __init__(self, portfolios: Sequence[PortfolioSection], folder: Path, *, fsync: bool = True) -> None:
        self.book = PortfolioBook([portfolio(p) for p in portfolios])
        self.ids = np.array(self.book.ids, dtype=object)
        self.followed = frozenset(s for p in portfolios for s in p.strategies)
        self.folder, self.fsync = folder, fsync
        self.log: RecordLog | None = None
        self.day = ""
        self.rows: Ints = np.arange(len(self.book), dtype=np.int64)  # per log position: the book's row, or -1
        self.batches: dict[str, NetOrder] = {}  # today's, by allocation key (the signal id)
        self.approvals: dict[str, dict[str, Any]] = {}  # the approval each batch was published as
        self.allocated: dict[str, dict[str, Any]] = {}  # fill id -> its portfolio.allocation payload, today's
        self.unknown: set[str] = set()  # portfolio ids in the log that the config no longer has

    # -- the day's log ----------------------------------------------------------------------------

    def open(self, day: str) -> None:
        """Today's log replayed; without one, the newest earlier day's replayed and carried into today."""
        path = self.folder / f"{day}.wal"
        if path.exists():
            self._replay(path)
            self.day = day
            if not np.array_equal(self.rows, np.arange(len(self.book))):  # the config changed since it was written
                assert self.log is not None
                self.log.append({"op": "ids", "ids": self.book.ids})
                self.rows = np.arange(len(self.book), dtype=np.int64)
            return
        earlier = sorted(p for p in self.folder.glob("*.wal") if p.stem < day) if self.folder.is_dir() else []
        if earlier:
            self._replay(earlier[-1])
        self.roll(day)

    def _replay(self, path: Path) -> None:
        self.log = RecordLog(path, fsync=self.fsync)
        self.log.replay(self._apply)
        self.log.close()
        if self.unknown:
            log.warning("allocation log %s names portfolios the config no longer has (their records are left out): %s",
                        path, ", ".join(sorted(self.unknown)))
        self.log = RecordLog(path, fsync=self.fsync)  # opened again for appends

    def roll(self, day: str) -> None:
        """A new day: positions carry over at their average price, realised P&L and batches start afresh."""
        if self.log is not None:
            self.log.close()
        self.book.new_day()
        self.batches.clear()
        self.approvals.clear()
        self.allocated.clear()
        self.day = day
        self.log = RecordLog(self.folder / f"{day}.wal", fsync=self.fsync)
        self.rows = np.arange(len(self.book), dtype=np.int64)
        carry = {symbol: [pos.quantity.tolist(), pos.average.tolist()]
                 for symbol, pos in self.book.positions.items() if pos.quantity.any()}
        self.log.append({"op": "carry", "day": day, "ids": self.book.ids, "positions": carry})
        for old in sorted(self.folder.glob("*.wal"))[:-KEEP_DAYS]:  # only the newest is read; a few for people
            old.unlink()

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None

    def _apply(self, record: dict[str, Any]) -> None:
        """One record, at replay."""
        op = record["op"]
        if op in ("carry", "ids"):
            row = {pid: n for n, pid in enumerate(self.book.ids)}
            self.unknown |= {pid for pid in record["ids"] if pid not in row}
            self.rows = np.array([row.get(pid, -1) for pid in record["ids"]], dtype=np.int64)
        if op == "carry":
            for symbol, (quantity, average) in record["positions"].items():
                pos = self.book.position(symbol)
                pos.quantity[:] = self._dense(quantity)
                pos.average[:] = self._dense(average, np.float64)
        elif op == "batch":
            self._batch(record)
        elif op == "fill":
            units = self._dense(record["units"])
            batch = self.batches[record["key"]]
            batch.remaining -= units // batch.lot_size
            self.book.fill(record["symbol"], units, float(record["price"]))
            self.allocated[record["fill_id"]] = self._event(record, units)
        elif op != "ids":
            raise ValueError(f"unknown op {op!r}")

    def _dense(self, values: list[Any], dtype: type = np.int64) -> npt.NDArray[Any]:
        """A record's list (in the log's ids' order) as an array in the book's rows."""
        given: npt.NDArray[Any] = np.asarray(values, dtype=dtype)
        if given.shape != self.rows.shape:
            raise ValueError(f"{len(given)} values for {len(self.rows)} portfolios")
        out: npt.NDArray[Any] = np.zeros(len(self.book), dtype=dtype)
        known = self.rows >= 0
        out[self.rows[known]] = given[known]
        return out

    def _batch(self, record: dict[str, Any]) -> NetOrder:
        batch = NetOrder(record["symbol"], int(record["lot"]), self._dense(record["intents"]))
        self.batches[record["key"]] = batch
        self.approvals[record["key"]] = record["approval"]
        return batch

    # -- the order path ---------------------------------------------------------------------------

    def follows(self, strategy: str) -> bool:
        return strategy in self.followed

    @staticmethod
    def reason_counts(intents: Intents) -> list[int]:
        """How many portfolios each ``Reason`` (by value) sized the signal for."""
        return [int(n) for n in np.bincount(intents.reasons, minlength=len(Reason))]

    @staticmethod
    def taking_part(lots: Ints) -> int:
        """How many portfolios a batch's lots move."""
        return int(np.count_nonzero(lots))

    def decide(self, signal: Signal) -> Intents:
        return decide(self.book, signal)

    def record(self, key: str, symbol: str, lot: int, lots: Ints, approval: dict[str, Any]) -> None:
        """A batch, durable before its approval is published."""
        assert self.log is not None
        record = {"op": "batch", "key": key, "symbol": symbol, "lot": lot, "approval": approval, "intents": lots.tolist()}
        self.log.append(record)
        self._batch(record)

    def allocate(self, fill: dict[str, Any], publish: Callable[[dict[str, Any]], object]) -> dict[str, Any] | None:
        """A fill of a batch's order shared out (netting's rule), logged, applied and published (the
        ``portfolio.allocation`` payload, also returned); None for a fill that is no batch's or was
        allocated before. AllocationError (nothing changed) for a fill the batch cannot take; OSError
        (nothing changed) when the log cannot be written."""
        batch = self.batches.get(str(fill.get("signal_id")))
        if batch is None or fill["fill_id"] in self.allocated:
            return None
        units = batch.allocate(int(fill["quantity"]))
        record = {"op": "fill", "fill_id": fill["fill_id"], "key": fill["signal_id"], "symbol": batch.symbol,
                  "side": fill.get("side"), "instrument_type": fill.get("instrument_type", ""),
                  "price": float(fill["price"]), "units": units.tolist()}
        assert self.log is not None
        try:
            self.log.append(record)
        except OSError:
            batch.remaining += units // batch.lot_size
            raise
        self.book.fill(batch.symbol, units, record["price"])
        payload = self.allocated[record["fill_id"]] = self._event(record, units)
        publish(payload)
        return payload

    def _event(self, record: dict[str, Any], units: Ints) -> dict[str, Any]:
        """The ``portfolio.allocation`` payload: the fill, and the portfolios that took part with their signed
        units of it, as two lists side by side (a dict of 10,000 would cost ~1 ms to build). The journal
        keeps it; the end-of-day report's per-portfolio P&L is built from these."""
        taking = np.flatnonzero(units)
        return {"fill_id": record["fill_id"], "signal_id": record["key"], "symbol": record["symbol"],
                "side": record["side"], "instrument_type": record["instrument_type"], "price": record["price"],
                "portfolios": self.ids[taking].tolist(), "units": units[taking].tolist()}

    def standing(self) -> Ints:
        """How many portfolios stand at each ``Reason`` (OK, LOSS_LIMIT, DISABLED) whatever the signal."""
        counts: Ints = np.bincount(self.book.standing(), minlength=8).astype(np.int64)
        return counts
