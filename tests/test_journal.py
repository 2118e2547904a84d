"""The journal's day files and the replay reader, on real files."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import orjson
import pytest
import zstandard

from daemons.journal.writer import FRAME_EVENTS, DayFiles
from daemons.journal_format import frames, reader
from daemons.journal_format.layout import COLUMNS, MARKET
from daemons.marketdata.instruments import load_instruments
from daemons.marketdata.replay import ReplayError, ticks
from daemons.marketdata.session import SessionClock
from daemons.marketdata.simulator import MarketSimulator
from daemons.runtime.envelope import EventFactory, tick_key
from tests.conftest import REPO


def fill(fill_id: str) -> dict[str, object]:
    return {"fill_id": fill_id, "order_id": "1", "client_id": "C1", "engine": "fno", "strategy": "ema",
            "symbol": "NIFTYFUT", "instrument_type": "FUT", "side": "BUY", "quantity": 75, "price": 24000.5,
            "exchange_ts": 1_763_610_000_000_000_000}


def read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_events_and_csvs_are_appended_and_refills_after_a_restart_are_not_doubled(tmp_path: Path) -> None:
    stamp = EventFactory("execution").stamp
    day = DayFiles(tmp_path)
    day.add(stamp("execution.fill", fill("F1"), trace="tick-1")[0])
    day.add(stamp("marketdata.tick", {"symbol": "X", "last_price": 1.0})[0])
    day.add(stamp("execution.order", {"client_id": "C1", "status": "COMPLETE", "filled_quantity": 75})[0])
    day.write(sync=True)
    day.close()
    again = DayFiles(tmp_path)  # algo-journal restarted; execution re-sends the day's orders and fills
    again.add(stamp("execution.fill", fill("F1"))[0])
    again.add(stamp("execution.order", {"client_id": "C1", "status": "COMPLETE", "filled_quantity": 75})[0])
    again.add(stamp("execution.fill", fill("F2"))[0])
    again.close()
    fills = read(tmp_path / "fills.csv")
    assert [r["fill_id"] for r in fills] == ["F1", "F2"]
    assert fills[0]["trace"] == "tick-1" and fills[0]["exchange_time"].startswith("2025-11-20T")
    assert list(fills[0]) == list(COLUMNS["fills.csv"])
    assert len(read(tmp_path / "orders.csv")) == 1
    assert len((tmp_path / "events.jsonl").read_bytes().splitlines()) == 5  # the order path, every event of it
    assert [e["type"] for e in reader.events(tmp_path, ("market",))] == ["marketdata.tick"]  # compressed beside it


def test_an_event_handed_over_again_after_a_kill_is_written_once(tmp_path: Path) -> None:
    """The broker hands a killed journal's unacknowledged events to the next one: those already in
    events.jsonl (read back from its tail, a damaged line skipped) are not written twice."""
    signal = EventFactory("fno").stamp("strategy.signal", {"strategy": "ema", "symbol": "X", "side": "BUY"})[0]
    approved = EventFactory("risk").stamp("risk.approved", {"signal_id": signal.id, "symbol": "X"})[0]
    day = DayFiles(tmp_path)
    assert day.add(signal) and day.add(approved)
    day.close()
    with open(tmp_path / "events.jsonl", "ab") as f:
        f.write(b'{"id": "torn')  # a line a crash cut short
    again = DayFiles(tmp_path)
    assert not again.add(signal) and not again.add(approved)
    later = EventFactory("risk").stamp("risk.blocked", {"signal_id": "s2", "symbol": "X"})[0]
    assert again.add(later) and not again.add(later)
    again.close()
    assert [r["decision"] for r in read(tmp_path / "decisions.csv")] == ["approved", "blocked"]
    assert len(read(tmp_path / "signals.csv")) == 1


def test_replay_reads_only_ticks_and_stops_at_a_torn_frame(tmp_path: Path) -> None:
    stamp = EventFactory("marketdata").stamp
    day = DayFiles(tmp_path)
    for price in (1.0, 2.0):
        day.add(stamp("marketdata.tick", {"symbol": "X", "last_price": price, "exchange_ts": 5})[0])
        day.add(stamp("health.heartbeat", {})[0])
        day.add(stamp("strategy.signal", {"symbol": "X"})[0])
    day.close()
    whole = (tmp_path / MARKET).read_bytes()
    with open(tmp_path / MARKET, "ab") as f:
        f.write(whole[:len(whole) // 2])  # a second frame, torn by a crash
    got = list(ticks(tmp_path))
    assert [t["last_price"] for _, t in got] == [1.0, 2.0]
    assert got[0][0] < got[1][0]  # paced by when they were journaled


def test_a_day_written_before_market_zst_still_replays_and_stops_at_a_torn_line(tmp_path: Path) -> None:
    stamp = EventFactory("marketdata").stamp
    lines = []
    for price in (1.0, 2.0):
        for event in (stamp("marketdata.tick", {"symbol": "X", "last_price": price, "exchange_ts": 5})[0],
                      stamp("health.heartbeat", {})[0]):
            lines.append(orjson.dumps({"id": event.id, "ts": event.ts, "type": event.type, "source": event.source,
                                       "seq": event.seq, "trace": event.trace, "key": "", "payload": event.payload}))
    (tmp_path / "events.jsonl").write_bytes(b"\n".join(lines) + b'\n{"type":"marketdata.tick","pay')
    got = list(ticks(tmp_path))
    assert [t["last_price"] for _, t in got] == [1.0, 2.0]


def test_replay_of_a_tick_csv(tmp_path: Path) -> None:
    path = tmp_path / "ticks.csv"
    path.write_text("timestamp,symbol,last_price,bid,ask,volume\n"
                    "2026-11-20T09:15:00,INFY,1500.5,1500,1501,10\n"
                    "2026-11-20T09:15:01,INFY,1501,1500.5,1501.5,20\n")
    got = list(ticks(path))
    assert [t["volume"] for _, t in got] == [10, 20]
    assert got[1][0] - got[0][0] == 1_000_000_000 and got[0][1]["exchange_ts"] == got[0][0]


@pytest.mark.parametrize("text, error", [
    ("symbol,last_price\nINFY,1\n", "missing column(s) timestamp"),
    ("timestamp,symbol,last_price\n2026-11-20T09:15:00,INFY,abc\n", "ticks.csv:2: could not convert"),
])
def test_a_bad_tick_csv_names_the_problem(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "ticks.csv"
    path.write_text(text)
    with pytest.raises(ReplayError, match=error.replace("(", r"\(").replace(")", r"\)")):
        list(ticks(path))


def test_the_journal_daemon_starts_a_new_directory_at_ist_midnight(tmp_path: Path) -> None:
    import asyncio

    from daemons.journal.main import JournalDaemon
    from daemons.runtime.config import FleetConfig
    from daemons.runtime.envelope import Event
    from daemons.runtime.metrics import DaemonMetrics

    config = FleetConfig.model_validate({"daemons": {"journal": {"directory": str(tmp_path)}}})
    journal = JournalDaemon(config, DaemonMetrics("journal"))
    midnight_ist = 1_763_577_000 * 10**9  # 2025-11-20 00:00 IST

    async def feed() -> None:
        for ts in (midnight_ist - 1, midnight_ist, midnight_ist + 1):
            journal._on_event(Event("health.heartbeat", "t", 1, {}, f"e{ts}", ts, "x"))
            await asyncio.sleep(0)
        await journal.drain()

    asyncio.run(feed())
    lines = {d.name: len(list(reader.events(d))) for d in tmp_path.iterdir()}
    assert lines == {"2025-11-19": 1, "2025-11-20": 2}


def test_the_journal_asks_for_the_days_fills_at_start_and_after_each_reconnect(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fill lost in flight (a killed broker, or the journal's own socket at kill -9) comes back: the
    journal asks execution for every engine's fills of the day whenever it (re)connects."""
    import asyncio

    from daemons.journal.main import JournalDaemon
    from daemons.runtime.config import FleetConfig
    from daemons.runtime.metrics import DaemonMetrics
    from daemons.runtime.transport import UnixTransport
    from tests.helpers import unsent_frames

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    journal = JournalDaemon(FleetConfig.model_validate({"daemons": {"journal": {"tick_fsync_sec": 0.05}}}),
                            DaemonMetrics("journal"))
    transport = journal.bus.transport
    assert isinstance(transport, UnixTransport)

    def syncs() -> list[str]:
        return [orjson.loads(f.body)["payload"]["engine"] for f in unsent_frames(journal.bus) if f.topic == b"control.sync"]

    async def go() -> None:
        transport.connected = True
        runner = asyncio.create_task(journal.run())
        await asyncio.sleep(0.2)
        assert syncs() == ["fno", "equity", "options"]
        transport.reconnects += 1
        await asyncio.sleep(0.2)
        assert syncs() == ["fno", "equity", "options"] * 2
        journal.stopping.set()
        await runner

    asyncio.run(go())


def test_a_live_frame_of_ticks_reads_back_and_its_compressor_stays_small(tmp_path: Path) -> None:
    """The journal holds its compressor all day: a full live frame of ticks needs no more than ~1 MB of it
    (level 3's own tables were ~1.5 MB), and keeps the checksum a torn or damaged frame is found by."""
    stamp = EventFactory("marketdata").stamp
    sim = MarketSimulator(load_instruments(REPO / "configs" / "instruments" / "paper.csv"), seed=1,
                          clock=SessionClock(date(2026, 11, 23), 10_000))
    block = frames.Block()
    while block.count < FRAME_EVENTS:
        for tick in sim.step()[:FRAME_EVENTS - block.count]:
            block.add(stamp("marketdata.tick", tick, key=tick_key(tick))[0])
    squeeze = frames.compressor()
    frame = block.frame(squeeze)
    assert squeeze.memory_size() < 1_200_000
    assert zstandard.get_frame_parameters(frame).has_checksum
    (tmp_path / MARKET).write_bytes(frame)
    assert len(list(frames.read(tmp_path / MARKET))) == FRAME_EVENTS
