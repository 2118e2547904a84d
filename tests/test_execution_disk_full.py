"""algo-execution on a full state disk: an order whose intent cannot be logged is refused, never
sent; what follows a sent order (answers, fills) waits in memory and reaches the log once the disk
takes it; one crit line per outage; a restart converges on the broker's book."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest

from daemons.execution.main import ExecutionDaemon
from daemons.runtime.config import FleetConfig
from daemons.runtime.envelope import EventFactory
from daemons.runtime.metrics import DaemonMetrics
from daemons.runtime.wal import RecordLog
from tests.helpers import unsent_frames

DAY = date(2026, 11, 20)
stamp = EventFactory("risk").stamp


def tick(ts: int = 1) -> dict[str, Any]:
    return {"symbol": "INFY", "bid": 1000.0, "ask": 1000.5, "bid_qty": 100, "ask_qty": 100, "lot_size": 1,
            "tick_size": 0.05, "exchange_ts": ts, "type": "EQ"}


def approval(n: int) -> dict[str, Any]:
    return {"engine": "equity", "strategy": "rsi-infy", "symbol": "INFY", "side": "BUY", "quantity": 10,
            "order_type": "MARKET", "limit_price": None, "signal_id": f"rsi-infy:2026-11-20:{n}",
            "tick_ts": time.time_ns()}


class Disk:
    """The ledger's log file on a disk that can be made full (appends raise ENOSPC)."""

    def __init__(self, d: ExecutionDaemon, monkeypatch: pytest.MonkeyPatch) -> None:
        assert d.ledger is not None
        self.full = False
        wal = d.ledger.log.wal
        real = wal.append

        def append(record: dict[str, Any], *, sync: bool = True) -> None:
            if self.full:
                raise OSError(errno.ENOSPC, "No space left on device")
            real(record, sync=sync)

        monkeypatch.setattr(wal, "append", append)


def daemon(state: Path, monkeypatch: pytest.MonkeyPatch) -> ExecutionDaemon:
    monkeypatch.setenv("STATE_DIRECTORY", str(state))
    d = ExecutionDaemon(FleetConfig.model_validate({"daemons": {"execution": {"latency_ms": 0}}}),
                        DaemonMetrics("execution"))
    asyncio.run(d._open_day(DAY))
    assert d.paper is not None
    d._on_tick(stamp("marketdata.tick", tick())[0])
    return d


def backlog(d: ExecutionDaemon) -> float | None:
    return d.metrics.registry.get_sample_value("algo_execution_wal_backlog")


def published(d: ExecutionDaemon, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(f.body)["payload"] for f in unsent_frames(d.bus) if f.topic.decode() == topic]


def wal_ops(tmp_path: Path) -> list[tuple[str, str]]:
    return [(r["op"], r["client_id"]) for r in RecordLog(tmp_path / DAY.isoformat() / "orders.wal").records]


def test_no_order_is_sent_without_its_intent_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    d = daemon(tmp_path, monkeypatch)
    disk = Disk(d, monkeypatch)
    disk.full = True
    with caplog.at_level(logging.INFO, logger="algo.execution"):
        d._on_approved(stamp("risk.approved", approval(1))[0])
        d._on_approved(stamp("risk.approved", approval(2))[0])
        assert d.paper is not None and d.paper.orders == {}, "nothing reached the broker"
        assert d.orders == {}
        rejects = published(d, "execution.reject")
        assert [r["reason"] for r in rejects] == [
            "state disk full: the write-ahead log cannot be written (No space left on device); not sent"] * 2
        crit = [r for r in caplog.records if r.levelno == logging.CRITICAL]
        assert len(crit) == 1, "one crit line per outage"
        assert crit[0].getMessage().startswith("state disk full: new orders refused until the write-ahead log can "
                                               "be written again (")
        assert d.status().startswith("DEGRADED (state disk full: No space left on device")
        assert d.ledger is not None and d.ledger.flush()  # the loop's retry: nothing waits, nothing proven
        assert d.ledger.trouble and not any("writable again" in r.getMessage() for r in caplog.records)

        disk.full = False  # space again: the next order goes, and the recovery is logged
        d._on_approved(stamp("risk.approved", approval(3))[0])
    assert len(d.paper.orders) == 1 and d.status().startswith("paper broker")
    assert any(r.getMessage().startswith("state disk writable again") and r.levelno == logging.INFO
               for r in caplog.records)
    assert [op for op, _ in wal_ops(tmp_path)] == ["new", "placed"]
    d._close_files()


def test_fills_the_disk_refused_wait_in_memory_and_are_written_later(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    d = daemon(tmp_path, monkeypatch)
    disk = Disk(d, monkeypatch)
    d._on_approved(stamp("risk.approved", approval(1))[0])
    disk.full = True
    d._on_tick(stamp("marketdata.tick", tick(2))[0])  # the paper broker fills it
    [order] = d.orders.values()
    assert order.status == "COMPLETE" and len(published(d, "execution.fill")) == 1, "told at once"
    assert backlog(d) == 1
    assert ("fill", order.client_id) not in wal_ops(tmp_path)
    assert d.ledger is not None and not d.ledger.flush()  # still full: still waiting
    disk.full = False
    assert d.ledger.flush()
    assert wal_ops(tmp_path)[-1] == ("fill", order.client_id) and backlog(d) == 0
    d._close_files()
    again = daemon(tmp_path, monkeypatch)
    assert again.orders[order.client_id].filled == 10
    assert again.reconciled.labels("fills_recovered")._value.get() == 0
    again._close_files()


def test_a_crash_while_fills_wait_converges_on_the_brokers_book(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    d = daemon(tmp_path, monkeypatch)
    disk = Disk(d, monkeypatch)
    d._on_approved(stamp("risk.approved", approval(1))[0])
    disk.full = True
    d._on_tick(stamp("marketdata.tick", tick(2))[0])
    d._close_files()  # the process ends with the fill still in memory only
    again = daemon(tmp_path, monkeypatch)
    [order] = again.orders.values()
    assert (order.status, order.filled) == ("COMPLETE", 10)
    assert again.reconciled.labels("fills_recovered")._value.get() == 1
    again._close_files()


def test_a_torn_last_line_from_a_full_disk_does_not_stop_the_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    d = daemon(tmp_path, monkeypatch)
    d._on_approved(stamp("risk.approved", approval(1))[0])
    d._close_files()
    path = tmp_path / DAY.isoformat() / "orders.wal"
    whole = path.read_bytes()
    with open(path, "ab") as f:
        f.write(b'{"op":"fill","client_id":"AB')  # the disk filled mid-line and the process died
    with caplog.at_level(logging.WARNING, logger="algo.execution"):
        again = daemon(tmp_path, monkeypatch)
    assert path.read_bytes().startswith(whole)  # the torn bytes are gone; the restart appended after them
    assert any("dropping a torn last record" in r.getMessage() for r in caplog.records)
    assert len(again.orders) == 1
    again._close_files()


def test_an_append_whose_cut_back_failed_is_cut_before_the_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = RecordLog(tmp_path / "orders.wal", fsync=False)
    log.append({"op": "new", "client_id": "A"})
    real_write, real_truncate = os.write, os.ftruncate

    def short(fd: int, data: bytes) -> int:
        real_write(fd, data[:7])
        raise OSError(errno.ENOSPC, "No space left on device")

    def broken(fd: int, size: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "write", short)
    monkeypatch.setattr(os, "ftruncate", broken)
    with pytest.raises(OSError):
        log.append({"op": "placed", "client_id": "A", "order_id": "1"})
    monkeypatch.setattr(os, "write", real_write)
    monkeypatch.setattr(os, "ftruncate", real_truncate)
    log.append({"op": "placed", "client_id": "A", "order_id": "2"})
    log.close()
    assert RecordLog(tmp_path / "orders.wal").records == [{"op": "new", "client_id": "A"},
                                                         {"op": "placed", "client_id": "A", "order_id": "2"}]


def test_a_day_roll_on_a_full_disk_refuses_orders_and_opens_the_day_once_it_can(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The new day's files cannot be created: the daemon stays up, refuses approvals with the reason (never
    sends one unlogged), says so once at crit, and opens the day at a later try once the disk takes it."""
    from daemons.execution.ledger import Ledger

    d = daemon(tmp_path, monkeypatch)
    full = True

    def ledger(path: Path, **kwargs: Any) -> Any:
        if full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return Ledger(path, **kwargs)

    monkeypatch.setattr("daemons.execution.day.Ledger", ledger)
    next_day = date(2026, 11, 21)
    with caplog.at_level(logging.INFO, logger="algo.execution"):
        asyncio.run(d._roll(next_day))
        asyncio.run(d._roll(next_day))  # the serving loop's next try: still full
        assert d.day is None and d.ledger is None and d.paper is None
        d._on_approved(stamp("risk.approved", approval(1))[0])
        [refused] = published(d, "execution.reject")
        assert refused["status"] == "REJECTED" and "cannot be opened (No space left on device)" in refused["reason"]
        assert not (tmp_path / "2026-11-21" / "orders.wal").exists(), "nothing was logged, so nothing may be sent"
        assert "DEGRADED" in d.status()
        crit = [r for r in caplog.records if r.levelno == logging.CRITICAL]
        assert len(crit) == 1 and "2026-11-21" in crit[0].getMessage()
        full = False
        asyncio.run(d._roll(next_day))
    assert d.day is not None and d.day.date == next_day and "DEGRADED" not in d.status()
    assert any("new orders are taken again" in r.getMessage() for r in caplog.records)
    d._on_approved(stamp("risk.approved", approval(2))[0])
    [order] = d.orders.values()
    ops = [(r["op"], r["client_id"]) for r in RecordLog(tmp_path / "2026-11-21" / "orders.wal").records]
    assert ops[0] == ("new", order.client_id), "the next day's orders are logged in the next day's file"
    d._close_files()
