"""algo-journal-retention: closed journal days compacted, and expired ones removed, per kind.

Run by algo-journal-retention.timer as a oneshot (no bus, no metrics endpoint). A closed day is
any day before today (IST) that algo-journal does not hold: the writer keeps a shared flock on
the day's directory, and this takes it exclusively or leaves the day alone.

- Compaction rewrites a closed day's market.zst in ``frames.COMPACT_EVENTS``-event frames at
  ``frames.COMPACT_LEVEL`` (about 20 bytes a tick instead of 25; bench/journal/README.md), then
  renames it over the old file: a crash leaves one or the other, whole. Once per day (a
  ``.compacted`` mark).
- Retention removes market.zst once a day is older than ``keep_market_days`` and the order path
  (events.jsonl, the CSVs) once older than ``keep_orders_days``; 0 keeps a kind forever. A day
  written before market.zst existed holds its ticks in events.jsonl: it is kept as the order path is.

``--dry-run`` says what would be compacted and removed, and changes nothing.
Exit codes: 0 done, 65 (EX_DATAERR) a market file it cannot read (left as it was), 78 a bad config.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from ..journal_format import frames
from ..journal_format.layout import COLUMNS, EVENTS, MARKET, is_day
from ..marketdata.session import IST
from ..runtime.config import ConfigError, JournalSection, load_config, resolve_path
from ..runtime.daemon import EX_CONFIG
from ..runtime.logs import setup_logging

EX_DATAERR = 65
COMPACTED = ".compacted"
ORDER_PATH = (EVENTS, *COLUMNS)

log = logging.getLogger("algo.journal")


@dataclass
class Plan:
    """What one run does (or, dry, would do)."""

    compact: list[Path] = field(default_factory=list)  # market.zst files
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
    market = folder / MARKET
    if market.is_file():
        if section.keep_market_days and age > section.keep_market_days:
            plan.remove += [market, *([folder / COMPACTED] if (folder / COMPACTED).exists() else [])]
        elif not (folder / COMPACTED).exists():
            plan.compact.append(market)
    if section.keep_orders_days and age > section.keep_orders_days:
        plan.remove += [folder / name for name in ORDER_PATH if (folder / name).is_file()]
    return plan


def compact(market: Path) -> tuple[int, int]:
    """Rewrite one closed day's market data in large frames; (bytes before, bytes after)."""
    tmp = market.with_name(market.name + ".compacting")
    squeeze = frames.compressor(frames.COMPACT_LEVEL)
    try:
        with open(tmp, "wb") as out:
            block = frames.Block()
            for event in frames.read(market):
                block.add_dict(event)
                if block.count >= frames.COMPACT_EVENTS:
                    out.write(block.frame(squeeze))
                    block = frames.Block()
            if block.count:
                out.write(block.frame(squeeze))
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    before, after = market.stat().st_size, tmp.stat().st_size
    os.replace(tmp, market)
    (market.parent / COMPACTED).touch()
    _fsync_dir(market.parent)
    return before, after


def run(journal: Path, section: JournalSection, today: date, dry_run: bool) -> Plan:
    done = Plan()
    for day, folder in days(journal, today):
        with closed(folder) as ok:
            if not ok:
                log.warning("%s is still being written by algo-journal: left alone", folder)
                done.busy.append(folder)
                continue
            plan = plan_day(day, folder, today, section)
            for market in plan.compact:
                if dry_run:
                    log.info("would compact %s (%d bytes)", market, market.stat().st_size)
                else:
                    before, after = compact(market)
                    log.info("compacted %s: %d -> %d bytes", market, before, after)
            for file in plan.remove:
                log.info("%s remove %s (%d bytes, %d days old)", "would" if dry_run else "removing", file,
                         file.stat().st_size, (today - day).days)
                if not dry_run:
                    file.unlink()
            if not dry_run and plan.remove:
                _fsync_dir(folder)
                if not any(folder.iterdir()):
                    folder.rmdir()
            done.compact += plan.compact
            done.remove += plan.remove
    return done


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry ``algo-journal-retention [--config PATH] [--dry-run]``."""
    parser = argparse.ArgumentParser(prog="algo-journal-retention", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="fleet config (default: $ALGO_CONFIG or /etc/algo/fleet.toml)")
    parser.add_argument("--dry-run", action="store_true", help="say what would be compacted and removed; change nothing")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    setup_logging("algo-journal-retention", args.log_level)
    try:
        config = load_config(resolve_path(args.config))
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("config error in %s: %s", exc.source, problem)
        sys.exit(EX_CONFIG)
    section = config.daemons.journal
    try:
        plan = run(section.directory, section, datetime.now(IST).date(), args.dry_run)
    except frames.FrameError as exc:
        log.error("compaction stopped, the file is left as it was: %s", exc)
        sys.exit(EX_DATAERR)
    log.info("%s%d market files compacted, %d files removed, %d days being written left alone",
             "dry run: " if args.dry_run else "", len(plan.compact), len(plan.remove), len(plan.busy))
