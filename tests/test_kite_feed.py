"""The live feed against the Kite emulator with the real kiteconnect client: universe resolution and
its daily cache, the decoder against KiteTicker's own, ticks onto the asyncio loop, reconnects after
drops and refusals, and silence in and out of market hours (on an injected clock)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
import pytest
import uvloop
from kiteconnect import KiteConnect, KiteTicker
from kiteconnect.exceptions import NetworkException
from pydantic import SecretStr

from daemons.kite_emulator import Emulator, datafiles
from daemons.kite_emulator.packets import Level, Tick, encode, message
from daemons.marketdata.instruments import COLUMNS, Instrument
from daemons.marketdata.kite_feed import PRE_OPEN, Backoff, KiteFeed, session_opened
from daemons.marketdata.ticks import NS, Meta, decode
from daemons.marketdata.universe import UniverseError, load_dump, resolve, split
from daemons.runtime.calendar import IST
from daemons.runtime.config import KiteSection, MarketdataSection, MarketSection
from tests.helpers import unsent_frames, wait_until

DAY = date(2026, 11, 18)  # a Wednesday
INFY, NIFTY_50, SENSEX = 408065, 256265, 265
NIFTY_NOV, NIFTY_DEC, NIFTY_OCT = 13238786, 13239042, 13238530  # NFO: segment 2
USDINR, EURINR_BCD, GOLD_NCO = 1412355, 1412614, 1412620  # segments 3 (cds), 6 (bcd), 12 (nco)
EXTRA_ROWS = [  # dated contracts around DAY and other segments, which the emulator's own dump lacks
    (NIFTY_OCT, 51713, "NIFTY26OCTFUT", "NIFTY", "2026-10-27", 0.0, 0.1, 75, "FUT", "NFO-FUT", "NFO"),
    (NIFTY_DEC, 51715, "NIFTY26DECFUT", "NIFTY", "2026-12-29", 0.0, 0.1, 75, "FUT", "NFO-FUT", "NFO"),
    (NIFTY_NOV, 51714, "NIFTY26NOVFUT", "NIFTY", "2026-11-24", 0.0, 0.1, 75, "FUT", "NFO-FUT", "NFO"),
    (USDINR, 5517, "USDINR26NOVFUT", "USDINR", "2026-11-26", 0.0, 0.0025, 1, "FUT", "CDS-FUT", "CDS"),
    (EURINR_BCD, 5518, "EURINR26NOVFUT", "EURINR", "2026-11-26", 0.0, 0.0025, 1, "FUT", "BCD-FUT", "BCD"),
    (GOLD_NCO, 5518, "GOLDGUINEA26NOVFUT", "GOLDGUINEA", "2026-11-28", 0.0, 1.0, 1, "FUT", "NCO-FUT", "NCO"),
]
FULL = dict(last_price=1573.7, last_traded_quantity=7, average_traded_price=1570.37, volume_traded=1192471,
            total_buy_quantity=256443, total_sell_quantity=363009, open=1569.15, high=1575.0, low=1561.05,
            close=1567.8, last_trade_time=1_763_445_687, oi=12, oi_day_high=15, oi_day_low=3,
            exchange_timestamp=1_763_445_688)
DEPTH: dict[str, list[dict[str, Any]]] = {
    "buy": [{"quantity": 5, "price": 1573.4, "orders": 1}, {"quantity": 140, "price": 1573.0, "orders": 2}],
         "sell": [{"quantity": 172, "price": 1573.75, "orders": 3}]}
SHIPPED_ROWS = len(datafiles.text("instruments.csv").splitlines()) - 1  # less the header
FAST = Backoff(initial_sec=0.05, factor=1.5, max_sec=0.3, max_closed_sec=0.3)


class ShiftedClock:
    """Wall time that reads ``at`` now and runs on with the real monotonic clock (or jumps)."""

    def __init__(self, at: datetime) -> None:
        self.offset = at.timestamp() - time.monotonic()

    def jump(self, seconds: float) -> None:
        self.offset += seconds

    def time(self) -> float:
        return time.monotonic() + self.offset

    def monotonic(self) -> float:
        return time.monotonic()


MARKET = datetime(2026, 11, 18, 10, 0, tzinfo=IST)
EVENING = datetime(2026, 11, 18, 16, 0, tzinfo=IST)


# -- fixtures -------------------------------------------------------------------------------------


def write_dump(path: Path) -> Path:
    """The emulator's own instruments dump plus ``EXTRA_ROWS``, for the emulator to serve."""
    fixture = datafiles.text("instruments.csv").rstrip("\n")
    extra = [",".join(map(str, (t, et, sym, name, 0.0, exp, strike, tick, lot, kind, seg, ex)))
             for t, et, sym, name, exp, strike, tick, lot, kind, seg, ex in EXTRA_ROWS]
    path.write_text("\n".join([fixture, *extra]) + "\n")
    return path


@pytest.fixture
def dump_csv(tmp_path: Path) -> Path:
    return write_dump(tmp_path / "dump.csv")


@pytest.fixture
def emulator(dump_csv: Path) -> Iterator[Emulator]:
    with Emulator(instruments_csv=dump_csv, heartbeat_interval=0.2) as em:
        yield em


@pytest.fixture
def kite(emulator: Emulator) -> KiteConnect:
    return KiteConnect(emulator.api_key, emulator.access_token, root=emulator.root, timeout=5)


@pytest.fixture
def dump(kite: KiteConnect, tmp_path: Path) -> list[Instrument]:
    return load_dump(kite, tmp_path / f"instruments-{DAY}.csv")


class LoopThread:
    """The daemon's side: a uvloop loop in its own thread, recording what ``publish`` gets and where."""

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self.published: list[dict[str, Any]] = []
        self.threads: set[int] = set()
        self.thread = threading.Thread(target=self.loop.run_forever, name="asyncio", daemon=True)
        self.thread.start()

    def publish(self, ticks: list[dict[str, Any]]) -> None:
        self.threads.add(threading.get_ident())
        self.published += ticks

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def asyncio_side() -> Iterator[LoopThread]:
    side = LoopThread()
    yield side
    side.close()


def kite_section(emulator: Emulator, **kwargs: Any) -> KiteSection:
    return KiteSection(api_key=SecretStr(emulator.api_key), access_token=SecretStr(emulator.access_token),
                       root=emulator.root, ticker_root=emulator.ws_url, **kwargs)


@pytest.fixture
def start_feed(emulator: Emulator, asyncio_side: LoopThread,
               dump: list[Instrument]) -> Iterator[Callable[..., KiteFeed]]:
    """Start a feed on ``entries`` (subscribed when this returns); stopped, and its connections
    seen closed by the emulator, after the test."""
    feeds: list[KiteFeed] = []

    def make(entries: list[str], at: datetime = EVENING, stale: float = 10.0, mode: Literal["ltp", "quote", "full"] = "full",
             backoff: Backoff = FAST) -> KiteFeed:
        section = MarketdataSection(feed="kite", universe=entries, ticker_mode=mode, stale_after_sec=stale)
        instruments = resolve(entries, dump, DAY)
        feed = KiteFeed(section, kite_section(emulator), instruments, asyncio_side.publish, asyncio_side.loop,
                        ShiftedClock(at), backoff=backoff)
        feeds.append(feed)
        feed.start()
        wait_until(lambda: subscribed(emulator, [i.token for i in instruments], mode), 5, "the subscription")
        return feed

    yield make
    for feed in feeds:
        feed.stop()
    wait_until(lambda: emulator.subscriptions() == [], 5, "the feed's connections to close")


def subscribed(emulator: Emulator, tokens: list[int], mode: str) -> bool:
    return any(all(s.get(t) == mode for t in tokens) for s in emulator.subscriptions())


# -- universe -------------------------------------------------------------------------------------


def test_universe_resolves_from_the_dump_and_a_restart_reads_the_days_cache(
        emulator: Emulator, kite: KiteConnect, tmp_path: Path) -> None:
    cache = tmp_path / f"instruments-{DAY}.csv"
    dump = load_dump(kite, cache)
    assert cache.read_text().splitlines()[0] == ",".join(COLUMNS) and len(dump) == SHIPPED_ROWS + len(EXTRA_ROWS)
    got = resolve(["NSE:INFY", "INDICES:NIFTY 50", "NSE:NIFTY 50", "INDICES:SENSEX", "NFO:FUT:NIFTY",
                   "NFO:BANKNIFTY99DEC52000CE", "CDS:USDINR26NOVFUT"], dump, DAY)
    assert [i.token for i in got] == [INFY, NIFTY_50, SENSEX, NIFTY_NOV, 15364354, USDINR]  # NIFTY 50 once
    option = got[4]
    assert (option.type, option.name, option.strike, option.expiry, option.lot_size, option.tick_size,
            option.exchange) == ("CE", "BANKNIFTY", 52000.0, date(2099, 12, 29), 35, 0.05, "NFO")
    assert (got[3].symbol, got[3].lot_size, got[3].tick_size) == ("NIFTY26NOVFUT", 75, 0.1)

    emulator.faults.rate_limit(count=10)  # Kite now refuses: a second start the same day must not ask
    with pytest.raises(NetworkException):
        kite.instruments()
    assert load_dump(kite, cache) == dump


def test_nearest_future_rolls_only_after_expiry(dump: list[Instrument]) -> None:
    def nearest(day: date) -> str:
        return resolve(["NFO:FUT:NIFTY"], dump, day)[0].symbol

    assert nearest(date(2026, 10, 27)) == "NIFTY26OCTFUT"  # its expiry day: it trades until the close
    assert nearest(date(2026, 10, 28)) == "NIFTY26NOVFUT"
    assert nearest(date(2026, 11, 25)) == "NIFTY26DECFUT"


def test_unknown_entries_are_all_named(dump: list[Instrument]) -> None:
    with pytest.raises(UniverseError) as err:
        resolve(["NSE:INFY", "NSE:NOSUCH", "NFO:FUT:NOSUCH", "INFY", "BSE:TCS"], dump, DAY)
    text = str(err.value)
    for entry in ("'NSE:NOSUCH'", "'NFO:FUT:NOSUCH'", "'INFY' is not EXCH:SYMBOL", "'BSE:TCS'"):
        assert entry in text
    assert "'NSE:INFY'" not in text


def _instruments(n: int) -> list[Instrument]:
    return [Instrument((1000 + i) << 8 | 1, f"S{i}", f"S{i}", 0.0, None, 0.0, 0.05, 1, "EQ", "NSE", "NSE")
            for i in range(n)]


def test_split_uses_as_few_connections_as_fit_and_fills_them_evenly() -> None:
    assert [len(g) for g in split(_instruments(7), 3, 3)] == [3, 2, 2]
    assert [len(g) for g in split(_instruments(3001), 3, 3000)] == [1501, 1500]
    assert [len(g) for g in split(_instruments(9000), 3, 3000)] == [3000, 3000, 3000]
    assert [i.token for g in split(_instruments(8), 3, 3) for i in g] == [i.token for i in _instruments(8)]
    with pytest.raises(UniverseError, match=r"9001 instruments, but 3 connection\(s\) x 3000 .* at most 9000"):
        split(_instruments(9001), 3, 3000)
    with pytest.raises(UniverseError, match="empty"):
        split([], 3, 3000)


def test_the_feed_refuses_a_universe_that_does_not_fit(emulator: Emulator, asyncio_side: LoopThread) -> None:
    section = MarketdataSection(feed="kite")
    with pytest.raises(UniverseError, match="at most 4"):
        KiteFeed(section, kite_section(emulator, max_connections=2, instruments_per_connection=2), _instruments(5),
                 asyncio_side.publish, asyncio_side.loop)
    with pytest.raises(ValueError, match="access_token"):
        KiteFeed(section, KiteSection(api_key=SecretStr("k")), _instruments(1), asyncio_side.publish,
                 asyncio_side.loop)


# -- decoding -------------------------------------------------------------------------------------


def expected(tick: dict[str, Any], inst: Instrument, now_ns: int) -> dict[str, Any]:
    """The payload KiteFeed promises, built from what KiteTicker._parse_binary decoded."""
    last = tick["last_price"]
    buy = sell = {"price": 0.0, "quantity": 0}
    if "depth" in tick:
        buy, sell = tick["depth"]["buy"][0], tick["depth"]["sell"][0]
    stamps = [t for t in (tick.get("exchange_timestamp"), tick.get("last_trade_time")) if t and t.timestamp() > 0]
    return {
        "token": inst.token, "symbol": inst.symbol, "exchange": inst.exchange, "last_price": last,
        "last_qty": tick.get("last_traded_quantity", 0),
        "bid": buy["price"] or last, "ask": sell["price"] or last,
        "bid_qty": buy["quantity"] if buy["price"] else 0, "ask_qty": sell["quantity"] if sell["price"] else 0,
        "volume": tick.get("volume_traded", 0), "oi": tick.get("oi", 0),
        "exchange_ts": int(stamps[0].timestamp()) * NS if stamps else now_ns,
        "type": inst.type, "underlying": inst.name, "strike": inst.strike,
        "expiry": inst.expiry.isoformat() if inst.expiry else None,
        "lot_size": inst.lot_size or 1, "tick_size": inst.tick_size or 0.05,
    }


def check_decodes_like_the_client(msg: bytes, dump: list[Instrument]) -> list[dict[str, Any]]:
    by_token = {i.token: i for i in dump}
    meta = {t: Meta.of(i) for t, i in by_token.items()}
    now_ns = 1_763_449_999 * NS
    reference = KiteTicker("k", "t")._parse_binary(msg)
    assert reference, "the client decoded nothing: not a tick message"
    got, malformed = decode(msg, meta, now_ns)
    assert malformed == 0
    assert got == [expected(t, by_token[t["instrument_token"]], now_ns) for t in reference]
    return got


def _tick(token: int, price: float, **fields: Any) -> Tick:
    return Tick(token, last_price=price, **fields)


FULL_TICK = _tick(INFY, 1573.7, **{k: v for k, v in FULL.items() if k != "last_price"},
                  buy=tuple(Level(**lv) for lv in DEPTH["buy"]), sell=tuple(Level(**lv) for lv in DEPTH["sell"]))


@pytest.mark.parametrize("mode", ["ltp", "quote", "full"])
@pytest.mark.parametrize("token,price", [
    (INFY, 1573.7), (NIFTY_NOV, 24412.35), (NIFTY_50, 24350.55), (SENSEX, 80123.45),
    (USDINR, 88.6725), (EURINR_BCD, 102.3375), (GOLD_NCO, 9876.5)])
def test_every_mode_segment_and_divisor_decodes_as_the_client(mode: str, token: int, price: float,
                                                              dump: list[Instrument]) -> None:
    tick = _tick(token, price, last_traded_quantity=3, volume_traded=900, close=price - 1, oi=40,
                 last_trade_time=1_763_445_600, exchange_timestamp=0 if token == USDINR else 1_763_445_601,
                 buy=(Level(9, price - 0.0025, 1),), sell=())  # an empty ask side
    (got,) = check_decodes_like_the_client(message([encode(tick, mode)]), dump)
    assert got["last_price"] == price


def test_a_mixed_message_and_a_long_full_message_decode_as_the_client(dump: list[Instrument]) -> None:
    mixed = [encode(FULL_TICK, "full"), encode(_tick(NIFTY_50, 24350.5), "full"), encode(_tick(USDINR, 88.5), "ltp"),
             encode(_tick(SENSEX, 80000.0), "quote"), encode(_tick(NIFTY_DEC, 24500.0, oi=7), "quote")]
    check_decodes_like_the_client(message(mixed), dump)
    futures = [encode(_tick(t, 24000.0 + n, oi=n, exchange_timestamp=1_763_445_600 + n,
                            buy=(Level(n + 1, 23999.9 + n, 1),), sell=(Level(n + 2, 24000.1 + n, 1),)), "full")
               for n, t in enumerate([NIFTY_NOV, NIFTY_DEC, NIFTY_OCT, INFY] * 50)]
    assert len(check_decodes_like_the_client(message(futures), dump)) == 200
    assert decode(b"\x00", {}, 0) == ([], 0) and decode(message([encode(FULL_TICK, "full")]), {}, 0) == ([], 0)


# -- the feed -------------------------------------------------------------------------------------


def test_ticks_reach_publish_on_the_loop_thread(emulator: Emulator, asyncio_side: LoopThread,
                                                start_feed: Callable[..., KiteFeed]) -> None:
    feed = start_feed(["NSE:INFY", "INDICES:NIFTY 50", "NFO:FUT:NIFTY"])
    emulator.push_tick(INFY, depth=DEPTH, **FULL)
    emulator.push_tick(NIFTY_50, last_price=24350.55, exchange_timestamp=1_763_445_690)
    emulator.push_tick(NIFTY_NOV, last_price=24412.3)
    wait_until(lambda: len(asyncio_side.published) == 3, 5, "three ticks published")
    assert asyncio_side.threads == {asyncio_side.thread.ident}
    infy, nifty, future = asyncio_side.published
    assert infy == {
        "token": INFY, "symbol": "INFY", "exchange": "NSE", "last_price": 1573.7, "last_qty": 7, "bid": 1573.4,
        "ask": 1573.75, "bid_qty": 5, "ask_qty": 172, "volume": 1192471, "oi": 12,
        "exchange_ts": 1_763_445_688 * NS, "type": "EQ", "underlying": "INFOSYS", "strike": 0.0, "expiry": None,
        "lot_size": 1, "tick_size": 0.05}
    assert (nifty["last_price"], nifty["bid"], nifty["ask"], nifty["exchange_ts"]) == (
        24350.55, 24350.55, 24350.55, 1_763_445_690 * NS)
    assert (nifty["lot_size"], nifty["tick_size"], nifty["exchange"]) == (1, 0.05, "NSE")
    assert (future["symbol"], future["type"], future["underlying"], future["expiry"], future["lot_size"]) == (
        "NIFTY26NOVFUT", "FUT", "NIFTY", "2026-11-24", 75)
    assert future["bid"] == future["ask"] == 24412.3 and future["bid_qty"] == 0  # an empty book quotes the last
    assert abs(future["exchange_ts"] / NS - time.time()) < 5  # the emulator stamps it now
    assert feed.ticks == 3 and feed.health() is None
    assert feed.status().startswith("kite feed: 1/1 connections up, 3 instruments (full), ")
    assert "market closed" in feed.status()


def test_malformed_packets_are_counted_logged_once_and_the_feed_goes_on(
        emulator: Emulator, asyncio_side: LoopThread, start_feed: Callable[..., KiteFeed],
        caplog: pytest.LogCaptureFixture) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from daemons.marketdata.main import FeedCollector

    feed = start_feed(["NSE:INFY"])
    for _ in range(3):
        emulator.push_packet(INFY, encode(FULL_TICK, "full")[:100])  # 100 bytes: no mode the client decodes
    emulator.push_tick(INFY, depth=DEPTH, **FULL)
    wait_until(lambda: asyncio_side.published, 5, "the tick after the malformed packets")
    assert feed.malformed == 3 and feed.ticks == 1 and asyncio_side.published[0]["last_price"] == 1573.7
    warnings = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert warnings == [("kite connection 1: 1 malformed packet(s) in a message of 104 bytes, skipped; the packets "
                         "around them were kept (1 malformed since start)")]
    registry = CollectorRegistry()
    registry.register(FeedCollector(feed))
    assert b"algo_marketdata_malformed_packets_total 3.0" in generate_latest(registry)


def test_dropped_ten_times_and_refused_the_feed_comes_back_by_itself(
        emulator: Emulator, asyncio_side: LoopThread, start_feed: Callable[..., KiteFeed]) -> None:
    feed = start_feed(["NSE:INFY", "NFO:FUT:NIFTY"], at=EVENING)
    emulator.faults.refuse_ws(seconds=3)
    started = time.monotonic()
    emulator.faults.drop_ws(after_messages=0, times=10)  # now, then right after each of 9 handshakes
    wait_until(lambda: feed.reconnects == 10, 15, "ten reconnects")
    assert time.monotonic() - started >= 2.9  # it waited out the refusal without giving up
    wait_until(lambda: subscribed(emulator, [INFY, NIFTY_NOV], "full"), 5, "the client's own resubscription")
    emulator.push_tick(INFY, depth=DEPTH, **FULL)
    wait_until(lambda: asyncio_side.published, 5, "a tick after the storm")
    assert asyncio_side.published[0]["bid"] == 1573.4  # still full mode
    assert feed.reconnects == 10 and feed.forced_reconnects == 0
    assert "1/1 connections up" in feed.status() and "10 reconnects" in feed.status()


def test_silence_in_market_hours_forces_a_reconnect_and_is_unhealthy(
        emulator: Emulator, asyncio_side: LoopThread, start_feed: Callable[..., KiteFeed]) -> None:
    feed = start_feed(["NSE:INFY"], at=MARKET, stale=1.0)
    emulator.set_price("NSE:INFY", 1500.0)
    wait_until(lambda: asyncio_side.published, 5, "a tick")
    assert feed.health() is None
    wait_until(lambda: feed.forced_reconnects >= 1, 5, "a reconnect forced by silence")
    reason = feed.health()
    assert reason is not None and reason.startswith("kite connection 1: no tick for ") and "market hours" in reason
    wait_until(lambda: feed.reconnects >= 1, 5, "the connection to come back")
    wait_until(lambda: subscribed(emulator, [INFY], "full"), 5, "the resubscription")

    def tick_and_check() -> bool:  # again and again: a forced drop may swallow one
        emulator.set_price("NSE:INFY", 1500.05)
        return feed.health() is None

    wait_until(tick_and_check, 5, "health back with ticks")
    emulator.faults.refuse_ws(seconds=3)
    emulator.faults.drop_ws()
    wait_until(lambda: "down for" in (feed.health() or ""), 5, "health to report the connection down")


def test_silence_outside_market_hours_is_healthy(emulator: Emulator, start_feed: Callable[..., KiteFeed]) -> None:
    feed = start_feed(["NSE:INFY"], at=EVENING, stale=0.3)
    time.sleep(1.5)
    assert feed.health() is None and feed.forced_reconnects == 0 and feed.reconnects == 0
    assert "last tick none yet" in feed.status() and "market closed" in feed.status()


def test_reconnects_hurry_from_the_pre_open(start_feed: Callable[..., KiteFeed]) -> None:
    """So a connection that was down overnight is retrying every max_sec by 09:15."""
    feed = start_feed(["NSE:INFY"], at=datetime(2026, 11, 18, 8, 59, tzinfo=IST), stale=1.0,
                      backoff=Backoff(initial_sec=0.05, factor=1.5, max_sec=0.3, max_closed_sec=0.6))
    factory = feed._connections[0].kws.factory  # the client's ReconnectingClientFactory
    assert factory.maxDelay == 0.6 and factory.maxRetries is None
    assert isinstance(feed.clock, ShiftedClock)
    feed.clock.jump(60)
    wait_until(lambda: factory.maxDelay == 0.3, 3, "the pre-open cap")
    assert feed.health() is None and feed.forced_reconnects == 0  # the pre-open is not market hours


def test_market_hours() -> None:
    def opened(at: datetime, holidays: frozenset[date] = frozenset()) -> float | None:
        return session_opened(at.timestamp(), 1000.0, MarketSection(holidays=list(holidays)))

    assert opened(datetime(2026, 11, 18, 9, 15, tzinfo=IST)) == 1000.0
    assert opened(MARKET) == 1000.0 - 45 * 60
    assert opened(datetime(2026, 11, 18, 15, 29, 59, tzinfo=IST)) is not None
    for closed in (datetime(2026, 11, 18, 9, 14, 59, tzinfo=IST), datetime(2026, 11, 18, 15, 30, tzinfo=IST),
                   datetime(2026, 11, 21, 10, 0, tzinfo=IST)):  # the last: a Saturday
        assert opened(closed) is None, closed
    assert opened(MARKET, frozenset({DAY})) is None
    assert session_opened(datetime(2026, 11, 18, 9, 1, tzinfo=IST).timestamp(), 1000.0, MarketSection(),
                          PRE_OPEN) == 940.0
    # the fleet's hours, not NSE's defaults: [market] open = 10:00
    later = MarketSection(open=datetime(2026, 11, 18, 10, 0).time())
    assert session_opened(datetime(2026, 11, 18, 9, 30, tzinfo=IST).timestamp(), 1000.0, later) is None
    assert session_opened(datetime(2026, 11, 18, 10, 1, tzinfo=IST).timestamp(), 1000.0, later) == 940.0


def test_the_marketdata_daemon_streams_the_live_universe_onto_the_bus(
        emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """algo-marketdata with feed = "kite": universe from the dump (cached in its state directory),
    ticks published on marketdata.tick, the reconnect counter exported, a bad universe a config error."""
    import asyncio

    from prometheus_client import generate_latest

    from daemons.marketdata.main import MarketdataDaemon
    from daemons.runtime.config import ConfigError, FleetConfig
    from daemons.runtime.metrics import DaemonMetrics

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    kite = {"api_key": emulator.api_key, "access_token": emulator.access_token, "root": emulator.root,
            "ticker_root": emulator.ws_url}

    def daemon(universe: list[str]) -> MarketdataDaemon:
        config = FleetConfig.model_validate({"kite": kite, "daemons": {"marketdata": {
            "feed": "kite", "universe": universe}}})
        return MarketdataDaemon(config, DaemonMetrics("marketdata"))

    async def stream() -> tuple[list[dict[str, Any]], bytes]:
        md = daemon(["NSE:INFY", "INDICES:NIFTY 50"])  # nothing that expires: the daemon resolves on today's date
        await md.setup()
        runner = asyncio.create_task(md.run())
        await asyncio.to_thread(wait_until, lambda: subscribed(emulator, [INFY, NIFTY_50], "full"), 5, "subscribed")
        emulator.push_tick(INFY, depth=DEPTH, **FULL)
        frames: list[Any] = []
        for _ in range(100):
            frames = unsent_frames(md.bus)
            if frames:
                break
            await asyncio.sleep(0.05)
        scrape = generate_latest(md.metrics.registry)
        md.stopping.set()
        await runner
        return [orjson.loads(f.body)["payload"] for f in frames], scrape

    published, scrape = asyncio.run(stream())
    assert [t["symbol"] for t in published] == ["INFY"] and published[0]["last_price"] == 1573.7
    assert b"algo_marketdata_reconnects_total 0.0" in scrape and b"algo_marketdata_instruments 2.0" in scrape
    assert (tmp_path / f"instruments-{datetime.now(IST).date()}.csv").exists()
    wait_until(lambda: emulator.subscriptions() == [], 5, "the connection to close")
    with pytest.raises(ConfigError, match="NSE:NOSUCH"):
        asyncio.run(daemon(["NSE:NOSUCH"]).setup())


def test_kitetickers_own_error_lines_reach_the_journal_as_warnings(caplog: pytest.LogCaptureFixture) -> None:
    """A redial or a close is routine for the feed, which reports outages itself: not an err line."""
    import logging

    import daemons.runtime.kite_ticker  # noqa: F401 (installs the filter)

    logging.getLogger("kiteconnect.ticker").error("Connection closed: 1006 - connection was closed uncleanly")
    [record] = [r for r in caplog.records if r.name == "kiteconnect.ticker"]
    assert (record.levelno, record.levelname) == (logging.WARNING, "WARNING")
