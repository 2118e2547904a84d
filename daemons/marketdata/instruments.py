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
    try:
        text = path.read_text()
    except OSError as exc:
        raise InstrumentsError(f"{path}: {exc.strerror or exc}") from None
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise InstrumentsError(f"{path}:1: not a Kite instruments dump, missing columns {', '.join(missing)}")
    out = []
    # Thousands of rows share a few names, types, segments, exchanges and expiries: one object each, not one
    # per row (~2 MB less at 9,000 instruments, held for the whole session)
    expiries: dict[str, date] = {}
    for line, row in enumerate(reader, start=2):
        try:
            expiry = row["expiry"]
            out.append(
                Instrument(
                    int(row["instrument_token"]), row["tradingsymbol"], sys.intern(row["name"]),
                    float(row["last_price"] or 0),
                    (expiries.get(expiry) or expiries.setdefault(expiry, date.fromisoformat(expiry))) if expiry else None,
                    float(row["strike"] or 0), float(row["tick_size"]), int(row["lot_size"]),
                    sys.intern(row["instrument_type"]), sys.intern(row["segment"]), sys.intern(row["exchange"]),
                )
            )
        except (TypeError, ValueError) as exc:
            raise InstrumentsError(f"{path}:{line}: {exc}") from None
    return out
