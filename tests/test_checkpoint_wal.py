"""A state made durable before each signal at one fdatasync (an append to ``checkpoint.wal``), folded
into ``checkpoint.json`` on save: whatever a crash interrupts, the newest durable state is restored."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from daemons.engine.main import EngineDaemon
from daemons.runtime.checkpoint import GENERATION, Checkpoint, peek
from daemons.runtime.envelope import EXECUTION_FILL, Event
from daemons.runtime.integrity import DamagedFile
from daemons.runtime.wal import RecordLog, encode
from daemons.strategies.base import Signal, Strategy, Tick
from tests.test_strategy_isolation import engine_with, tick_event


def test_the_newest_of_the_file_and_its_log_is_read(tmp_path: Path) -> None:
    c = Checkpoint(tmp_path / "checkpoint.json")
    assert c.read() is None
    c.log({"n": 1})
    c.log({"n": 2})
    assert not c.path.exists(), "a log is not the file"
    assert Checkpoint(c.path).read() == {"n": 2}
    c.write({"n": 3})
    assert c.wal.path.stat().st_size == 0, "the file holds it now"
    assert orjson.loads(c.path.read_bytes()) == {"n": 3, GENERATION: 3}
    c.log({"n": 4})
    again = Checkpoint(c.path)
    assert again.read() == {"n": 4} and again.generation == 4
    again.log({"n": 5})  # generations go on from the newest found
    assert Checkpoint(c.path).read() == {"n": 5}


def test_records_apply_in_order_over_the_file_and_add_to_its_lists(tmp_path: Path) -> None:
    """A record's keys replace the file's, its ``add`` appends to list-valued ones; a whole list replaces."""
    c = Checkpoint(tmp_path / "checkpoint.json")
    c.write({"n": 1, "ids": ["a"], "keep": "x"})
    c.log({"n": 2}, {"ids": ["b"]})
    c.log({"n": 3})
    c.log({}, {"ids": ["c"]})
    again = Checkpoint(c.path)
    assert again.read() == {"n": 3, "ids": ["a", "b", "c"], "keep": "x"} and again.logged == 3
    c.log({"ids": []})  # a day roll: the whole value
    c.log({}, {"ids": ["d"]})
    assert Checkpoint(c.path).read() == {"n": 3, "ids": ["d"], "keep": "x"}
    c.close()
    c.wal.path.write_bytes(encode({GENERATION: 9, "state": {}, "add": {"ids": "e"}}))
    with pytest.raises(DamagedFile, match="not a checkpoint record"):
        Checkpoint(c.path).read()


def test_peek_sees_what_a_restart_would_and_changes_nothing(tmp_path: Path) -> None:
    """Tools and tests read a running daemon's state with peek: the file alone can be seconds behind."""
    c = Checkpoint(tmp_path / "checkpoint.json")
    assert peek(c.path) is None
    c.write({"n": 1, "ids": ["a"]})
    c.log({"n": 2}, {"ids": ["b"]})
    c.close()
    torn = c.wal.path.read_bytes() + encode({GENERATION: 9, "state": {"n": 9}})[:-5]  # an append in progress
    c.wal.path.write_bytes(torn)
    assert peek(c.path) == {"n": 2, "ids": ["a", "b"]} and c.wal.path.read_bytes() == torn, "read only"


def test_records_older_than_the_file_are_left_out(tmp_path: Path) -> None:
    """A crash between writing the file and emptying the log leaves records the file already holds."""
    c = Checkpoint(tmp_path / "checkpoint.json")
    c.log({"n": 1})
    c.write({"n": 2})
    c.wal.path.write_bytes(encode({GENERATION: 1, "state": {"n": 1}}))
    assert Checkpoint(c.path).read() == {"n": 2}


def test_a_torn_last_record_is_cut_off_and_a_damaged_one_stops(tmp_path: Path) -> None:
    c = Checkpoint(tmp_path / "checkpoint.json")
    c.log({"n": 1})
    c.close()
    whole = c.wal.path.read_bytes()
    c.wal.path.write_bytes(whole + encode({GENERATION: 2, "state": {"n": 2}})[:-9])  # the crash came mid-append
    assert Checkpoint(c.path).read() == {"n": 1}
    c.wal.path.write_bytes(whole.replace(b'"n":1', b'"n":7'))  # a flipped byte
    with pytest.raises(DamagedFile, match="checksum mismatch"):
        Checkpoint(c.path).read()
    c.wal.path.write_bytes(encode({"op": "new"}))  # a record, but not a checkpoint's
    with pytest.raises(DamagedFile, match="not a checkpoint record"):
        Checkpoint(c.path).read()


def test_an_engine_killed_after_a_signal_never_hands_its_id_out_again(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    engine = engine_with(tmp_path, monkeypatch)
    asyncio.run(engine.setup())
    engine._on_tick(tick_event(1))
    assert engine.counts["steady"] == 1
    assert not (tmp_path / "checkpoint.json").exists(), "one fdatasync before the signal, not a rewrite"
    # kill -9 here: the next process finds the count in the log
    again = engine_with(tmp_path, monkeypatch)
    asyncio.run(again.setup())
    assert again.counts["steady"] == 1
    again._on_tick(tick_event(2))
    assert again.counts["steady"] == 2
    asyncio.run(again.drain())  # a clean stop writes checkpoint.json and empties the log
    assert orjson.loads((tmp_path / "checkpoint.json").read_bytes())["counts"]["steady"] == 2
    assert (tmp_path / "checkpoint.wal").stat().st_size == 0
    third = engine_with(tmp_path, monkeypatch)
    asyncio.run(third.setup())
    assert third.counts["steady"] == 2


def test_a_signal_is_written_before_it_goes_out_and_flushed_right_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The record is in checkpoint.wal when the signal is published (a killed engine keeps it: page cache), and
    its fdatasync follows the publish before the handler returns, so the signal never waits for the disk. A
    flush the disk refuses is logged (the signal is out) and the next record holds the whole state."""
    engine = engine_with(tmp_path, monkeypatch)
    asyncio.run(engine.setup())
    steps: list[Any] = []
    publish, real = engine.bus.publish, os.fdatasync

    def published(topic: str, payload: dict[str, Any], **kw: Any) -> Event:
        steps.append((topic, len(RecordLog(tmp_path / "checkpoint.wal").records)))
        return publish(topic, payload, **kw)

    def fdatasync(fd: int) -> None:
        steps.append("fdatasync")
        real(fd)

    monkeypatch.setattr(engine.bus, "publish", published)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    engine._on_tick(tick_event(1))
    assert steps == [("strategy.signal", 1), "fdatasync"]

    def refused(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", refused)
    engine._on_tick(tick_event(2))
    assert steps[-1] == ("strategy.signal", 2) and engine.counts["steady"] == 2
    assert "written but not flushed to disk (Input/output error)" in caplog.text
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    engine._on_tick(tick_event(3))
    assert "seen_fills" in RecordLog(tmp_path / "checkpoint.wal").records[-1]["state"], "whole after a refused flush"
    engine.checkpoint.close()


def fill_event(n: int) -> Event:
    payload = {"fill_id": f"fill-{n}", "strategy": "steady", "symbol": "INFY", "side": "BUY", "quantity": 1,
               "price": 100.0}
    return Event(EXECUTION_FILL, "execution", n, payload, f"f-{n}", n, f"f-{n}")


def test_a_fill_adds_its_id_to_the_log_and_a_signals_record_leaves_the_fills_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fill costs one fdatasync, not a rewrite of checkpoint.json: its record adds its id to the day's and
    holds the positions; a signal's record then carries neither (their size and cost grew with the day's
    fills). A restart applies the records in order over the file."""
    engine = engine_with(tmp_path, monkeypatch)
    asyncio.run(engine.setup())
    engine.save()
    written = (tmp_path / "checkpoint.json").read_bytes()
    engine._on_fill(fill_event(1))
    engine._on_tick(tick_event(1))
    engine._on_fill(fill_event(2))
    assert (tmp_path / "checkpoint.json").read_bytes() == written, "no rewrite for a fill"
    fill, signal, fill2 = RecordLog(tmp_path / "checkpoint.wal").records
    assert fill["add"] == {"seen_fills": ["fill-1"]} and "seen_fills" not in fill["state"]
    assert fill["state"]["positions"][0]["quantity"] == 1
    assert "seen_fills" not in signal["state"] and "positions" not in signal["state"] and "add" not in signal
    assert signal["state"]["counts"]["steady"] == 1 and fill2["add"] == {"seen_fills": ["fill-2"]}
    engine.checkpoint.close()
    again = engine_with(tmp_path, monkeypatch)
    asyncio.run(again.setup())
    assert again.seen_fills == {"fill-1", "fill-2"} and again.counts["steady"] == 1
    assert again.book.positions[("steady", "INFY")].quantity == 2
    again._on_fill(fill_event(1))  # execution sends the day's fills again after a restart: applied once
    assert again.book.positions[("steady", "INFY")].quantity == 2 and again.strategies["steady"].position == {"INFY": 2}
    again.save()
    assert orjson.loads((tmp_path / "checkpoint.json").read_bytes())["seen_fills"] == ["fill-1", "fill-2"]
    assert (tmp_path / "checkpoint.wal").stat().st_size == 0
    again.checkpoint.close()


def test_a_fill_the_disk_did_not_take_rides_whole_with_the_next_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fill whose record failed (a full disk) is in no durable record: the next one carries every fill id
    and the positions, so a restart never applies that fill twice (the strategies' positions in the same
    record already count it)."""
    engine = engine_with(tmp_path, monkeypatch)
    asyncio.run(engine.setup())
    engine.save()
    real = engine.checkpoint.log

    def full(state: dict[str, Any], add: dict[str, list[Any]] | None = None,
             merge: dict[str, dict[str, Any]] | None = None, sync: bool = True) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(engine.checkpoint, "log", full)
    with pytest.raises(OSError):
        engine._on_fill(fill_event(1))
    monkeypatch.setattr(engine.checkpoint, "log", real)
    engine._on_tick(tick_event(1))
    [record] = RecordLog(tmp_path / "checkpoint.wal").records
    assert record["state"]["seen_fills"] == ["fill-1"] and record["state"]["positions"][0]["quantity"] == 1
    engine._on_tick(tick_event(2))
    assert "seen_fills" not in RecordLog(tmp_path / "checkpoint.wal").records[-1]["state"], "whole once, then lean"
    engine.checkpoint.close()
    again = engine_with(tmp_path, monkeypatch)
    asyncio.run(again.setup())
    again._on_fill(fill_event(1))
    assert again.book.positions[("steady", "INFY")].quantity == 1 and again.strategies["steady"].position == {"INFY": 1}
    again.checkpoint.close()


def test_a_fold_the_disk_refuses_keeps_the_log_says_so_once_and_works_again_later(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A daemon's timer rewrites checkpoint.json; on a full disk that must not stop the daemon (the log still
    holds every record since the file), nor log a line every second."""
    import logging

    import daemons.runtime.checkpoint as module

    c = Checkpoint(tmp_path / "checkpoint.json")
    c.write({"n": 1})
    c.log({"n": 2})
    real = module.write

    def full(path: Path, state: dict[str, Any]) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(module, "write", full)
    with caplog.at_level(logging.INFO, logger="algo.checkpoint"):
        c.fold({"n": 2})
        c.fold({"n": 2})
        assert c.trouble == "No space left on device"
        assert [r.levelno for r in caplog.records] == [logging.ERROR] and "No space left" in caplog.records[0].getMessage()
        assert Checkpoint(c.path).read() == {"n": 2}, "the log still holds it"
        monkeypatch.setattr(module, "write", real)
        c.fold({"n": 2})
        assert c.trouble == "" and c.wal.path.stat().st_size == 0
        assert caplog.records[-1].levelno == logging.INFO and "written again" in caplog.records[-1].getMessage()
    assert Checkpoint(c.path).read() == {"n": 2}
    c.close()


class Remembering(Strategy):
    """Counts the ticks it saw; signals on each while ``loud`` (its count is what a restart must not lose)."""

    kind = "remembering"

    def __init__(self, name: str, *, loud: bool) -> None:
        super().__init__(name)
        self.loud, self.seen = loud, 0

    def on_tick(self, tick: Tick) -> list[Signal]:
        self.seen += 1
        return [self.signal(tick.symbol, "BUY", 1, "remembered", entry=True)] if self.loud else []

    def _state(self) -> dict[str, Any]:
        return {"seen": self.seen}

    def _load(self, state: dict[str, Any]) -> None:
        self.seen = state["seen"]


def test_a_signals_record_holds_the_strategy_that_signalled_not_every_one_the_engine_hosts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The record before a signal holds the engine's settings and the signalling strategy's state, merged into
    the file's at a restart: its size and cost do not grow with the strategies hosted. Each strategy's
    state is as durable as its own last signal (the others' are in checkpoint.json, at most checkpoint_sec old)."""
    def hosting(quiet: int) -> EngineDaemon:
        engine = engine_with(tmp_path, monkeypatch)
        engine.strategies = {"loud": Remembering("loud", loud=True),
                             **{f"quiet{n}": Remembering(f"quiet{n}", loud=False) for n in range(quiet)}}
        engine.counts.update(loud=0)
        return engine

    sizes = []
    for hosted in (1, 60):
        for leftover in tmp_path.glob("checkpoint.*"):
            leftover.unlink()
        engine = hosting(hosted)
        asyncio.run(engine.setup())
        engine.save()
        engine._on_tick(tick_event(1))
        [record] = RecordLog(tmp_path / "checkpoint.wal").records
        assert "strategies" not in record["state"] and record["state"]["counts"]["loud"] == 1
        assert record["merge"] == {"strategies": {"loud": {"position": {}, "seen": 1}}}
        sizes.append((tmp_path / "checkpoint.wal").stat().st_size)
        engine.checkpoint.close()
    assert sizes[0] == sizes[1], sizes
    engine._on_tick(tick_event(2))
    engine.checkpoint.close()  # kill -9: the file holds every strategy at 0 ticks, the log loud's two records
    again = hosting(60)
    asyncio.run(again.setup())
    loud, quiet = again.strategies["loud"], again.strategies["quiet7"]
    assert isinstance(loud, Remembering) and isinstance(quiet, Remembering)
    assert (loud.seen, again.counts["loud"], quiet.seen) == (2, 2, 0)
    again.save()
    assert orjson.loads((tmp_path / "checkpoint.json").read_bytes())["strategies"]["quiet7"] == {"position": {}, "seen": 0}
    again.checkpoint.close()


def test_a_merge_replaces_entries_of_a_dict_and_a_bad_one_is_damage(tmp_path: Path) -> None:
    c = Checkpoint(tmp_path / "checkpoint.json")
    c.write({"strategies": {"a": 1, "b": 1}, "n": 0})
    c.log({"n": 1}, merge={"strategies": {"b": 2}})
    c.log({}, merge={"strategies": {"c": 3}, "new": {"x": 1}})
    assert Checkpoint(c.path).read() == {"strategies": {"a": 1, "b": 2, "c": 3}, "n": 1, "new": {"x": 1}}
    c.close()
    c.wal.path.write_bytes(encode({GENERATION: 9, "state": {}, "merge": {"strategies": [1]}}))
    with pytest.raises(DamagedFile, match="not a checkpoint record"):
        Checkpoint(c.path).read()
    c.wal.path.write_bytes(encode({GENERATION: 9, "state": {"n": [1]}, "merge": {"n": {"x": 1}}}))
    with pytest.raises(DamagedFile, match="a merge into 'n', which the state before holds as no object"):
        Checkpoint(c.path).read()  # a clear stop (exit 78, the file named), not a TypeError out of setup
