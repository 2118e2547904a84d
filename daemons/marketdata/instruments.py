"""Kite's instruments dump (CSV), the one source of instrument definitions in paper and live."""

from __future__ import annotations

import csv
import sys
from datetime import date
from pathlib import Path
from typing import NamedTuple

COLUMNS = (
    "instrument_token", "exchange_token", "tradingsymbol", "name", "last_price", "expiry", "strike",
    "tick_size", "lot_size", "instrument_type", "segment", "exchange",
)


class Instrument(NamedTuple):
    token: int
    symbol: str  # tradingsymbol, e.g. NIFTY24DECFUT
    name: str  # the underlying for derivatives, e.g. NIFTY
    last_price: float
    expiry: date | None
    strike: float
    tick_size: float
    lot_size: int
    type: str  # EQ, FUT, CE, PE (indices: EQ in segment INDICES)
    segment: str
    exchange: str

    @property
    def is_option(self) -> bool:
        return self.type in ("CE", "PE")


class InstrumentsError(ValueError):
    """A dump that cannot be used, with the file and line to look at."""


def load_instruments(path: Path) -> list[Instrument]:
    """The dump's instruments, read a row at a time: the whole text and its lines at once were ~2 MB at 9,000
    rows, freed only after the rows kept had been made among them (bench/pipeline/README.md, round 11)."""
    try:
        with open(path, newline="") as f:
            return _instruments(path, csv.DictReader(f))
    except OSError as exc:
        raise InstrumentsError(f"{path}: {exc.strerror or exc}") from None


def _instruments(path: Path, reader: csv.DictReader[str]) -> list[Instrument]:
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise InstrumentsError(f"{path}:1: not a Kite instruments dump, missing columns {', '.join(missing)}")
    out = []
    # Thousands of rows share a few names, types, segments, exchanges, expiries, strikes and tick sizes: one
    # object each, not one per row (~2.5 MB less at 9,000 instruments, held for the whole session)
    expiries: dict[str, date] = {}
    floats: dict[str, float] = {}
    for line, row in enumerate(reader, start=2):
        try:
            expiry, strike, tick = row["expiry"], row["strike"], row["tick_size"]
            out.append(
                Instrument(
                    int(row["instrument_token"]), row["tradingsymbol"], sys.intern(row["name"]),
                    float(row["last_price"] or 0),
                    (expiries.get(expiry) or expiries.setdefault(expiry, date.fromisoformat(expiry))) if expiry else None,
                    floats.setdefault(strike, float(strike or 0)), floats.setdefault(tick, float(tick)),
                    int(row["lot_size"]),
                    sys.intern(row["instrument_type"]), sys.intern(row["segment"]), sys.intern(row["exchange"]),
                )
            )
        except (TypeError, ValueError) as exc:
            raise InstrumentsError(f"{path}:{line}: {exc}") from None
    return out
