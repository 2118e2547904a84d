"""The instruments the emulator knows: the dump it serves is the list it trades, and vice versa."""

from __future__ import annotations

import csv
import io
import threading
from dataclasses import dataclass
from pathlib import Path

COLUMNS = (
    "instrument_token", "exchange_token", "tradingsymbol", "name", "last_price", "expiry", "strike",
    "tick_size", "lot_size", "instrument_type", "segment", "exchange",
)


@dataclass(frozen=True)
class Instrument:
    """One dump row, with the fields orders are checked against."""

    token: int
    exchange: str
    tradingsymbol: str
    tick_size: float
    lot_size: int
    row: tuple[str, ...]  # the CSV fields as read, so the served dump matches the source

    @property
    def key(self) -> str:
        """``EXCH:SYMBOL``, the form quote routes and tests use."""
        return f"{self.exchange}:{self.tradingsymbol}"


class Instruments:
    """Lookup by ``EXCH:SYMBOL`` and by token; thread-safe (tests add while servers read)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[str, Instrument] = {}
        self._by_token: dict[int, Instrument] = {}

    @classmethod
    def from_csv(cls, path: Path) -> Instruments:
        return cls.from_text(path.read_text(), str(path))

    @classmethod
    def from_text(cls, text: str, source: str) -> Instruments:
        """A dump's CSV text; ``source`` names it in errors."""
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{source}: not a Kite instruments dump, missing columns {', '.join(missing)}")
        registry = cls()
        for row in reader:
            registry._put(Instrument(
                int(row["instrument_token"]), row["exchange"], row["tradingsymbol"], float(row["tick_size"]),
                int(row["lot_size"]), tuple(row[c] for c in COLUMNS),
            ))
        return registry

    def add(self, exchange: str, tradingsymbol: str, token: int, *, tick_size: float = 0.05, lot_size: int = 1,
            name: str = "", instrument_type: str = "EQ", segment: str | None = None) -> Instrument:
        """Make an instrument tradable and listed (one the dump lacks)."""
        row = (str(token), str(token >> 8), tradingsymbol, name, "0.0", "", "0.0", str(tick_size), str(lot_size),
               instrument_type, segment or exchange, exchange)
        instrument = Instrument(token, exchange, tradingsymbol, tick_size, lot_size, row)
        self._put(instrument)
        return instrument

    def _put(self, instrument: Instrument) -> None:
        with self._lock:
            self._by_key[instrument.key] = instrument
            self._by_token[instrument.token] = instrument

    def get(self, key: str) -> Instrument | None:
        with self._lock:
            return self._by_key.get(key)

    def by_token(self, token: int) -> Instrument | None:
        with self._lock:
            return self._by_token.get(token)

    def csv(self, exchange: str | None = None) -> str:
        """The dump, all exchanges or one, in Kite's column order."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
        with self._lock:
            rows = [i.row for i in self._by_key.values() if exchange is None or i.exchange == exchange]
        writer.writerows(rows)
        return out.getvalue()
