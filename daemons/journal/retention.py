"""algo-journal-retention: closed journal days compacted, and expired ones removed, per kind.

Run by algo-journal-retention.timer as a oneshot (no bus, no metrics endpoint). A closed day is
any day before today (IST) that algo-journal does not hold: the writer keeps a shared flock on
the day's directory, and this takes it exclusively or leaves the day alone.

- Compaction, once per day (a ``.compacted`` mark): market.zst rewritten in
  ``frames.COMPACT_EVENTS``-event frames at ``frames.COMPACT_LEVEL`` (~18 bytes a tick instead of
  24-33; bench/journal/README.md) and renamed over the old file. A day written before market.zst
  existed has its ticks moved out of events.jsonl into market.zst (or dropped, when its market data
  has expired): the new day is built beside the old one (CSVs hard-linked) and swapped in with one
  atomic ``renameat2(RENAME_EXCHANGE)``. A crash leaves the old day or the new one, whole, and a
  ``<day>.compacting`` directory the next run removes.
- Retention removes market.zst once a day is older than ``keep_market_days`` and the order path
  (events.jsonl, the CSVs) once older than ``keep_orders_days``; 0 keeps a kind forever.

``--dry-run`` says what would be compacted and removed, and changes nothing.
Exit codes: 0 done, 65 (EX_DATAERR) a market file it cannot read (left as it was), 78 a bad config.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import shutil
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import orjson

from ..journal_format import frames, reader
from ..journal_format.layout import COLUMNS, EVENTS, MARKET, MARKET_PREFIXES, is_day, kind_of
from ..runtime.calendar import IST
from ..runtime.checkpoint import fsync_dir
from ..runtime.config import JournalSection
from ..runtime.daemon import command_parser, start_command

EX_DATAERR = 65
COMPACTED = ".compacted"
ORDER_PATH = (EVENTS, *COLUMNS)
_MARKET_MARKS = tuple(f'"type":"{p}'.encode() for p in MARKET_PREFIXES)

log = logging.getLogger("algo.journal")


@dataclass
class Plan:
    """What one run does (or, dry, would do)."""

    compact: list[Path] = field(default_factory=list)  # day directories
    remove: list[Path] = field(default_factory=list)  # files
    busy: list[Path] = field(default_factory=list)  # day directories being written


def days(journal: Path, today: date) -> Iterator[tuple[date, Path]]:
    """The journal's closed days, oldest first (today's and any later are never offered)."""
    if not journal.is_dir():
        return
    for folder in sorted(journal.iterdir()):
        if folder.is_dir() and is_day(folder) and date.fromisoformat(folder.name) < today:
            yield date.fromisoformat(folder.name), folder


@contextmanager
def closed(folder: Path) -> Iterator[bool]:
    """True (holding the day) when algo-journal is not writing it, False when it is."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def plan_day(day: date, folder: Path, today: date, section: JournalSection) -> Plan:
    plan = Plan()
    age = (today - day).days
    orders_expired = bool(section.keep_orders_days) and age > section.keep_orders_days
    if not (folder / COMPACTED).exists() and not orders_expired:
        plan.compact.append(folder)
    if market_expired(age, section) and (folder / MARKET).is_file():
        plan.remove.append(folder / MARKET)
    if orders_expired:
        plan.remove += [folder / name for name in (*ORDER_PATH, COMPACTED) if (folder / name).is_file()]
    return plan


def market_expired(age: int, section: JournalSection) -> bool:
    return bool(section.keep_market_days) and age > section.keep_market_days


def compact_day(folder: Path, keep_market: bool) -> tuple[int, int]:
    """One closed day compacted; (bytes of its events before, after). Its market data in large frames, and
    ticks a day written before market.zst holds in events.jsonl moved there (or dropped, ``keep_market``
    false: expired). A split day is built beside the old one and swapped in with one atomic exchange."""
    events, market = folder / EVENTS, folder / MARKET
    before = sum(f.stat().st_size for f in (events, market) if f.is_file())
    new = folder.with_name(folder.name + ".compacting")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(mode=0o700)
    try:
        split = events.is_file() and _order_path_only(events, new / EVENTS)
        if not split:
            shutil.rmtree(new)
            if market.is_file() and keep_market:  # (expired market data is removed, not compacted)
                _reframe(frames.read(market), market.with_name(market.name + ".compacting"))
                os.replace(market.with_name(market.name + ".compacting"), market)
            (folder / COMPACTED).touch()
            fsync_dir(folder)
            return before, sum(f.stat().st_size for f in (events, market) if f.is_file())
        if keep_market:
            _reframe(reader.events(folder, ("market",)), new / MARKET)
        for other in folder.iterdir():
            if other.name not in (EVENTS, MARKET) and other.is_file():
                os.link(other, new / other.name)
        (new / COMPACTED).touch()
        fsync_dir(new)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    after = sum(f.stat().st_size for f in (new / EVENTS, new / MARKET) if f.is_file())
    _exchange(folder, new)  # readers see the old day or the new one, never a mix
    fsync_dir(folder.parent)
    shutil.rmtree(new)  # the old day now
    return before, after


def _order_path_only(events: Path, out: Path) -> bool:
    """Copy ``events`` without its market-data lines to ``out``; True when it had any (a day before market.zst)."""
    found = False
    with open(events, "rb") as src, open(out, "wb") as dst:
        for line in src:
            if any(mark in line for mark in _MARKET_MARKS):
                try:
                    topic = orjson.loads(line).get("type", "")
                except (orjson.JSONDecodeError, AttributeError):
                    topic = ""  # a torn last line: copied as it is, readers skip it
                if isinstance(topic, str) and kind_of(topic) == "market":
                    found = True
                    continue
            dst.write(line)
        dst.flush()
        os.fsync(dst.fileno())
    return found


def _reframe(events: Iterable[dict[str, Any]], out: Path) -> None:
    """Events into large, tightly compressed frames at ``out`` (fsynced), or no file on failure."""
    squeeze = frames.compressor(frames.COMPACT_LEVEL)
    try:
        with open(out, "wb") as f:
            block = frames.Block()
            for event in events:
                block.add_dict(event)
                if block.count >= frames.COMPACT_EVENTS:
                    f.write(block.frame(squeeze))
                    block = frames.Block()
            if block.count:
                f.write(block.frame(squeeze))
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        out.unlink(missing_ok=True)
        raise


_libc = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> None:
    """Swap two directories in one step (renameat2 RENAME_EXCHANGE, Linux 3.15+)."""
    if _libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(a))


def run(journal: Path, section: JournalSection, today: date, dry_run: bool) -> Plan:
    done = Plan()
    for day, folder in days(journal, today):
        with closed(folder) as ok:
            if not ok:
                log.warning("%s is still being written by algo-journal: left alone", folder)
                done.busy.append(folder)
                continue
            plan = plan_day(day, folder, today, section)
            for compact in plan.compact:
                if dry_run:
                    log.info("would compact %s", compact)
                    continue
                before, after = compact_day(compact, keep_market=not market_expired((today - day).days, section))
                log.info("compacted %s: its events %d -> %d bytes", compact, before, after)
                plan = replace(plan_day(day, folder, today, section), compact=plan.compact)
            for file in plan.remove:
                log.info("%s remove %s (%d bytes, %d days old)", "would" if dry_run else "removing", file,
                         file.stat().st_size, (today - day).days)
                if not dry_run:
                    file.unlink()
            if not dry_run and plan.remove:
                fsync_dir(folder)
                if not any(folder.iterdir()):
                    folder.rmdir()
            done.compact += plan.compact
            done.remove += plan.remove
    for leftover in journal.glob("*.compacting") if journal.is_dir() else ():
        if not dry_run and leftover.is_dir():  # a run that died mid-way: the day itself is whole
            log.info("removing %s, left by a compaction that did not finish", leftover)
            shutil.rmtree(leftover)
    return done


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry ``algo-journal-retention [--config PATH] [--dry-run]``."""
    parser = command_parser("algo-journal-retention", __doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="say what would be compacted and removed; change nothing")
    args = parser.parse_args(argv)
    config = start_command("algo-journal-retention", args)
    section = config.daemons.journal
    try:
        plan = run(section.directory, section, datetime.now(IST).date(), args.dry_run)
    except frames.FrameError as exc:
        log.error("compaction stopped, the file is left as it was: %s", exc)
        sys.exit(EX_DATAERR)
    log.info("%s%d days compacted, %d files removed, %d days being written left alone",
             "dry run: " if args.dry_run else "", len(plan.compact), len(plan.remove), len(plan.busy))
