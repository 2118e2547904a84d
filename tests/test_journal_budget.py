"""The journal at market scale: frames that read back what was written, market data shed at the disk's
floor (or while writes fail) with the order path kept, retention that removes exactly what it should,
compaction that changes no event, and execution refusing new orders at its own floor."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest

from daemons.journal import retention
from daemons.journal.main import JournalDaemon
from daemons.journal.writer import DayFiles
from daemons.journal_format import frames, reader
from daemons.journal_format.layout import COLUMNS, EVENTS, MARKET
from daemons.runtime.config import FleetConfig, JournalSection
from daemons.runtime.envelope import EventFactory
from daemons.runtime.metrics import DaemonMetrics

feed = EventFactory("marketdata").stamp
engine = EventFactory("fno").stamp


def test_frames_give_back_every_event_in_order_with_mixed_shapes(tmp_path: Path) -> None:
    block = frames.Block()
    sent = [feed("marketdata.tick", {"symbol": "A", "last_price": 1.5, "expiry": None}, key="1")[0],
            feed("health.heartbeat", {})[0],
            feed("marketdata.tick", {"symbol": "B", "last_price": 2, "expiry": "2026-11-27"}, trace="t-9")[0],
            feed("marketdata.tick", {"symbol": "C", "oi": 7})[0]]
    for event in sent:
        block.add(event)
    (tmp_path / MARKET).write_bytes(block.frame(frames.compressor()) * 2)  # two frames, appended
    got = list(frames.read(tmp_path / MARKET))
    want = [{"id": e.id, "ts": e.ts, "type": e.type, "source": e.source, "seq": e.seq, "trace": e.trace, "key": e.key,
             "payload": e.payload} for e in sent]
    assert got == want * 2
    assert [list(e["payload"]) for e in got[:4]] == [list(e.payload) for e in sent]  # key order kept
    assert [e["id"] for e in frames.read(tmp_path / MARKET, b'"B"')] == [e.id for e in sent] * 2  # frames holding it


def test_a_damaged_frame_is_an_error_naming_the_file(tmp_path: Path) -> None:
    block = frames.Block()
    block.add(feed("marketdata.tick", {"symbol": "A"})[0])
    frame = bytearray(block.frame(frames.compressor()))
    frame[len(frame) // 2] ^= 0xFF
    (tmp_path / MARKET).write_bytes(bytes(frame) + block.frame(frames.compressor()))
    with pytest.raises(reader.JournalError, match=rf"{MARKET}: frame 1"):
        list(reader.events(tmp_path))


def test_reader_merges_the_order_path_with_market_data_and_finds_a_trace(tmp_path: Path) -> None:
    day = DayFiles(tmp_path)
    tick = feed("marketdata.tick", {"symbol": "NIFTYFUT", "last_price": 24000.0})[0]
    other = feed("marketdata.tick", {"symbol": "INFY", "last_price": 1500.0})[0]
    signal = engine("strategy.signal", {"symbol": "NIFTYFUT", "side": "BUY"}, trace=tick.id)[0]
    day.add(tick)
    day.add(signal)  # written to its own file before the other tick's frame: read back by publish time
    day.add(other)
    day.close()
    assert [e["type"] for e in reader.events(tmp_path)] == ["marketdata.tick", "marketdata.tick", "strategy.signal"]
    assert [e["id"] for e in reader.events(tmp_path, needle=tick.id)] == [tick.id, signal.id]
    assert [e["type"] for e in reader.events(tmp_path, ("orders",))] == ["strategy.signal"]


class Disk:
    """statvfs of a disk whose free space the test sets."""

    def __init__(self, free_mb: int) -> None:
        self.free = free_mb << 20

    def __call__(self, path: Path) -> os.statvfs_result:
        return os.statvfs_result((4096, 4096, 1 << 30, self.free // 4096, self.free // 4096, 0, 0, 0, 0, 255))


def journal(tmp_path: Path, disk: Disk) -> JournalDaemon:
    config = FleetConfig.model_validate({"daemons": {"journal": {"directory": str(tmp_path), "shed_free_mb": 100}}})
    d = JournalDaemon(config, DaemonMetrics("journal"))
    d.budget.statvfs = disk
    return d


def metric(d: JournalDaemon, name: str, **labels: str) -> float:
    value = d.metrics.registry.get_sample_value(name, labels)
    assert value is not None, name
    return value


def test_at_the_floor_market_data_is_shed_loudly_and_the_order_path_kept(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    disk = Disk(free_mb=500)
    d = journal(tmp_path, disk)

    async def session() -> None:
        for phase_free in (500, 50, 120, 200):  # room; below the floor; above it but under the resume mark; room
            disk.free = phase_free << 20
            d._tick()
            for n in range(3):
                d._on_event(feed("marketdata.tick", {"symbol": "INFY", "last_price": float(n)})[0])
            d._on_event(engine("strategy.signal", {"symbol": "INFY", "phase": phase_free})[0])
            await asyncio.sleep(0)
        d._tick()
        await d.drain()

    with caplog.at_level(logging.INFO, "algo.journal"):
        asyncio.run(session())
    day = next(tmp_path.iterdir())
    assert [e["payload"]["phase"] for e in reader.events(day, ("orders",))] == [500, 50, 120, 200]
    assert len(list(reader.ticks(day))) == 6  # the first and the last phase's
    assert metric(d, "algo_journal_shed_events_total") == 6
    crit = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(crit) == 1 and "market data is no longer journaled" in crit[0], crit
    assert any("journaled again" in r.getMessage() for r in caplog.records)
    assert metric(d, "algo_journal_disk_free_bytes") == 200 << 20
    assert metric(d, "algo_journal_written_bytes_total", kind="market") > 0
    assert metric(d, "algo_journal_day_bytes", kind="orders") == (day / EVENTS).stat().st_size + sum(
        (day / name).stat().st_size for name in COLUMNS)
    assert metric(d, "algo_journal_day_bytes", kind="market") == (day / MARKET).stat().st_size


def test_while_writes_fail_market_data_is_dropped_and_the_order_path_held(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    d = journal(tmp_path, Disk(free_mb=500))

    real = os.write
    full = True

    def write(fd: int, data: Any) -> int:
        if full and len(data) > 10:
            real(fd, bytes(data)[:7])  # the disk takes a few bytes, then is full
            return 7
        return real(fd, data)

    async def session() -> None:
        nonlocal full
        d._on_event(engine("strategy.signal", {"n": 0})[0])
        await asyncio.sleep(0)
        full = False
        d._tick()  # open the day's files
        full = True
        d._on_event(feed("marketdata.tick", {"symbol": "INFY"})[0])
        d._on_event(engine("strategy.signal", {"n": 1})[0])
        await asyncio.sleep(0)
        d._tick()
        assert d.shedding and d.error
        d._on_event(feed("marketdata.tick", {"symbol": "INFY"})[0])  # shed at once
        full = False
        d._tick()
        await d.drain()

    monkeypatch.setattr(os, "write", write)
    asyncio.run(session())
    day = next(tmp_path.iterdir())
    assert [e["payload"]["n"] for e in reader.events(day)] == [0, 1]  # whole lines only: the short write was undone
    assert metric(d, "algo_journal_shed_events_total") == 2
    assert not d.shedding


def section(**kw: int) -> JournalSection:
    return JournalSection.model_validate(kw)


def make_day(journal: Path, day: str, legacy: bool = False) -> Path:
    """A closed day as algo-journal writes it, or (legacy) as today's main wrote it: every event in events.jsonl."""
    folder = journal / day
    files = DayFiles(folder)
    sent = [feed("marketdata.tick", {"symbol": "INFY", "last_price": 1.0})[0], feed("health.heartbeat", {})[0],
            engine("strategy.signal", {"symbol": "INFY"})[0], feed("marketdata.tick", {"symbol": "TCS", "oi": 3})[0]]
    for event in sent:
        files.add(event)
    files.close()
    if legacy:
        (folder / MARKET).unlink()
        (folder / EVENTS).write_bytes(b"".join(orjson.dumps(
            {"id": e.id, "ts": e.ts, "type": e.type, "source": e.source, "seq": e.seq, "trace": e.trace, "key": e.key,
             "payload": e.payload}, option=orjson.OPT_APPEND_NEWLINE) for e in sent))
    return folder


def tree(journal: Path) -> set[str]:
    return {str(p.relative_to(journal)) for p in journal.rglob("*") if p.is_file()}


def test_retention_removes_exactly_what_has_expired_and_leaves_today_and_a_day_being_written(tmp_path: Path) -> None:
    today = date(2026, 11, 20)
    for day in ("2026-09-01", "2026-10-20", "2026-10-21", "2026-11-19", "2026-11-20"):
        make_day(tmp_path, day)
    make_day(tmp_path, "2026-08-03", legacy=True)  # before market.zst: ticks inside events.jsonl
    (tmp_path / "not-a-day").mkdir()
    (tmp_path / "not-a-day" / MARKET).write_bytes(b"")
    writing = DayFiles(tmp_path / "2026-09-02")  # algo-journal still holds this one (a late day)
    writing.close()
    writing = DayFiles(tmp_path / "2026-09-02")
    before = tree(tmp_path)

    dry = retention.run(tmp_path, section(keep_market_days=30, keep_orders_days=90), today, dry_run=True)
    assert tree(tmp_path) == before
    plan = retention.run(tmp_path, section(keep_market_days=30, keep_orders_days=90), today, dry_run=False)
    writing.close()
    assert sorted(map(str, dry.remove)) == sorted(map(str, plan.remove))
    gone = before - tree(tmp_path)
    order_path = {"events.jsonl", *COLUMNS}
    assert gone == {f"2026-08-03/{n}" for n in order_path} | {"2026-09-01/market.zst", "2026-10-20/market.zst"}
    assert not (tmp_path / "2026-08-03").exists()  # nothing left in it
    assert plan.busy == [tmp_path / "2026-09-02"]
    assert {p.name for p in plan.compact} == {"2026-09-01", "2026-10-20", "2026-10-21", "2026-11-19"}  # once each
    again = retention.run(tmp_path, section(keep_market_days=30, keep_orders_days=90), today, dry_run=False)
    assert again.compact == [tmp_path / "2026-09-02"]  # no longer written; the others were compacted once
    assert {f"2026-11-20/{n}" for n in (*order_path, MARKET)} <= tree(tmp_path)  # today untouched

    forever = retention.run(tmp_path, section(keep_market_days=0, keep_orders_days=0), date(2030, 1, 1), dry_run=False)
    assert forever.remove == []


def test_compaction_moves_the_ticks_of_a_day_written_before_market_zst_out_of_its_order_path(tmp_path: Path) -> None:
    today = date(2026, 11, 20)
    kept, expired = make_day(tmp_path, "2026-11-10", legacy=True), make_day(tmp_path, "2026-10-01", legacy=True)
    lines = {d: (d / EVENTS).read_bytes().splitlines(keepends=True) for d in (kept, expired)}
    events = {d: list(reader.events(d)) for d in (kept, expired)}
    csvs = {name: (kept / name).read_bytes() for name in COLUMNS}
    (tmp_path / "2026-11-09.compacting").mkdir()  # left by a run that died
    retention.run(tmp_path, section(keep_market_days=30, keep_orders_days=0), today, dry_run=False)
    assert list(reader.events(kept)) == events[kept]  # the same events, now from both files
    assert (kept / EVENTS).read_bytes() == lines[kept][2]  # the signal's line, byte for byte: the order path alone
    assert [e["type"] for e in frames.read(kept / MARKET)] == ["marketdata.tick", "health.heartbeat", "marketdata.tick"]
    assert {name: (kept / name).read_bytes() for name in COLUMNS} == csvs
    assert (expired / EVENTS).read_bytes() == lines[expired][2] and not (expired / MARKET).exists()  # ticks dropped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2026-10-01", "2026-11-10"]


def test_compaction_keeps_every_event_and_makes_the_file_smaller(tmp_path: Path) -> None:
    day = tmp_path / "2026-11-19"
    files = DayFiles(day)
    for n in range(3000):
        files.add(feed("marketdata.tick", {"symbol": f"S{n % 50}", "last_price": 100.0 + n % 7, "volume": n})[0])
        if n % 200 == 0:
            files.frame()  # small frames, as a quiet feed writes them
    files.close()
    original = list(reader.events(day))
    before, after = retention.compact_day(day, keep_market=True)
    assert after < before
    assert list(reader.events(day)) == original


def test_execution_refuses_a_new_order_below_its_floor_with_one_crit_line(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from daemons.execution.backlog import BackloggedLog
    from daemons.execution.ledger import DISK_FULL
    from daemons.runtime.wal import RecordLog

    disk = Disk(free_mb=300)
    monkeypatch.setattr(os, "statvfs", disk)
    log = BackloggedLog(RecordLog(tmp_path / "orders.wal", fsync=False), DISK_FULL, logging.CRITICAL, 256 << 20)
    log.write_now({"op": "new", "n": 1})
    disk.free = 100 << 20
    with caplog.at_level(logging.INFO, "algo.execution"):
        for n in (2, 3):
            with pytest.raises(OSError) as refused:
                log.write_now({"op": "new", "n": n})
            assert refused.value.errno == errno.ENOSPC and "below the floor of 256 MB" in str(refused.value)
        log.append({"op": "fill", "n": 1})  # what follows an order already sent still reaches the log
        disk.free = 300 << 20
        log.write_now({"op": "new", "n": 4})
    crit = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(crit) == 1 and "new orders refused" in crit[0].getMessage()
    assert any("writable again" in r.getMessage() for r in caplog.records)
    logged: list[tuple[str, int]] = []
    RecordLog(tmp_path / "orders.wal", fsync=False).replay(lambda r: logged.append((r["op"], r["n"])))
    assert logged == [("new", 1), ("fill", 1), ("new", 4)]
