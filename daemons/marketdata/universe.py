"""The live feed's universe: config entries resolved to instruments through the day's Kite dump,
and split into ticker connections.

Entries (``daemons.marketdata.universe``):

- ``EXCH:TRADINGSYMBOL`` as Kite names instruments: ``NSE:INFY``, ``NFO:NIFTY26NOVFUT``,
  ``NFO:NIFTY26N2024350CE``, ``MCX:CRUDEOIL26NOVFUT``;
- ``INDICES:NAME`` for an index: ``INDICES:NIFTY 50``, ``INDICES:SENSEX`` (Kite lists indices under
  exchange NSE or BSE, segment INDICES; ``NSE:NIFTY 50`` works too);
- ``EXCH:FUT:NAME``: the nearest-expiry future of an underlying on that exchange, e.g.
  ``NFO:FUT:NIFTY``, ``NFO:FUT:RELIANCE``, ``MCX:FUT:CRUDEOIL``. NAME is the dump's ``name`` column.
  On its expiry day a contract is still the nearest (it trades until the close), so a
  restart that day keeps streaming the same contract.

The dump (``KiteConnect.instruments()``, ~100k rows for all exchanges) is fetched once per day: the
caller passes a per-day path (e.g. ``$STATE_DIRECTORY/instruments-YYYY-MM-DD.csv``) and a restart
the same day reads that file instead. Kite regenerates the dump once a day, in the morning: a dump
fetched before that lists the previous day's contracts and would be kept all day, so start the
live feed after it. Old files are not removed here.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from kiteconnect import KiteConnect

from .instruments import COLUMNS, Instrument, InstrumentsError, load_instruments

log = logging.getLogger("algo.marketdata.universe")


class UniverseError(ValueError):
    """A universe that cannot be streamed: unknown entries, or more instruments than fit."""


def load_dump(kite: KiteConnect, path: Path) -> list[Instrument]:
    """The day's dump: read from ``path`` when an earlier start wrote it, else fetched and written
    there (atomically, so a crash mid-write leaves no half file to trust). A cache that cannot be
    read is fetched again."""
    if path.exists():
        try:
            return load_instruments(path)
        except InstrumentsError as exc:
            log.warning("instruments cache unusable, fetching again: %s", exc)
    rows = kite.instruments()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow([row[c].isoformat() if isinstance(row[c], date) else row[c] for c in COLUMNS])
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    log.info("fetched %d instruments into %s", len(rows), path)
    return load_instruments(path)


def resolve(entries: Sequence[str], dump: Sequence[Instrument], day: date) -> list[Instrument]:
    """The instruments ``entries`` name, in their order, each once; UniverseError naming every
    entry that is malformed, unknown or ambiguous. ``day`` (IST) picks the nearest future."""
    by_key: dict[str, list[Instrument]] = {}
    futures: dict[tuple[str, str], list[Instrument]] = {}
    for inst in dump:
        by_key.setdefault(f"{inst.exchange}:{inst.symbol}", []).append(inst)
        if inst.segment == "INDICES" and inst.exchange != "INDICES":
            by_key.setdefault(f"INDICES:{inst.symbol}", []).append(inst)
        if inst.type == "FUT" and inst.expiry is not None and inst.expiry >= day:
            futures.setdefault((inst.exchange, inst.name), []).append(inst)
    out: dict[int, Instrument] = {}
    problems: list[str] = []
    for entry in entries:
        exchange, _, rest = entry.partition(":")
        if not exchange or not rest:
            problems.append(f"{entry!r} is not EXCH:SYMBOL")
            continue
        kind, _, name = rest.partition(":")
        if kind == "FUT" and name:
            contracts = futures.get((exchange, name))
            if not contracts:
                problems.append(f"{entry!r}: no {exchange} future of {name!r} expires on or after {day}")
                continue
            found = [min(contracts, key=lambda i: i.expiry or day)]
        else:
            found = by_key.get(entry, [])
        if not found:
            problems.append(f"{entry!r} is not in the instruments dump")
        elif len(found) > 1:
            problems.append(f"{entry!r} is ambiguous: tokens {', '.join(str(i.token) for i in found)}")
        else:
            out.setdefault(found[0].token, found[0])
    if problems:
        raise UniverseError("; ".join(problems))
    return list(out.values())


def split(instruments: Sequence[Instrument], max_connections: int, per_connection: int) -> list[list[Instrument]]:
    """As few connections as hold them all, filled evenly (so no connection carries more load than
    it must); UniverseError when ``max_connections x per_connection`` is not enough."""
    if not instruments:
        raise UniverseError("the universe is empty: list instruments in daemons.marketdata.universe")
    room = max_connections * per_connection
    if len(instruments) > room:
        raise UniverseError(
            f"{len(instruments)} instruments, but {max_connections} connection(s) x {per_connection} "
            f"(kite.max_connections x kite.instruments_per_connection) hold at most {room}")
    groups = -(-len(instruments) // per_connection)
    size, extra = divmod(len(instruments), groups)
    out, at = [], 0
    for n in range(groups):
        take = size + (n < extra)
        out.append(list(instruments[at:at + take]))
        at += take
    return out
