"""Candles and features (daemons/features): bars against a reference written independently here, the
indicators against their textbook definitions, the same output from a replayed journal day, and the
cache's snapshot encoding."""

from __future__ import annotations

import asyncio
import math
import random
import statistics
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from daemons.features.cache import COLUMNS, FeatureCache
from daemons.features.candles import Bar, CandleBuilder
from daemons.features.codec import snapshot, snapshot_bars, snapshot_rows
from daemons.features.indicators import FEATURES, Indicators, Periods
from daemons.features.stage import FeatureStage
from daemons.marketdata.main import SNAPSHOT_PAUSE_SEC, SNAPSHOT_SLICE, MarketdataDaemon, bar_symbols
from daemons.marketdata.replay import ticks as replayed
from daemons.marketdata.session import SessionClock
from daemons.marketdata.simulator import MarketSimulator
from daemons.runtime.calendar import IST
from daemons.runtime.config import ConfigError, FleetConfig, load_config
from daemons.runtime.envelope import Event, tick_key
from daemons.runtime.metrics import DaemonMetrics
from tests.helpers import unsent_frames
from tests.test_marketdata_sim import DAY, universe

# -- candles ------------------------------------------------------------------------------------------


def random_ticks(seed: int, n: int = 3000) -> list[dict[str, Any]]:
    """Three symbols ticking at random times over ~20 minutes, now and then a timestamp going back."""
    rng = random.Random(seed)
    open_ = datetime(2026, 11, 23, 9, 15, tzinfo=IST)
    ns = int(open_.timestamp()) * 10**9
    cumulative = {1: 5000, 2: 0, 3: 70}
    out = []
    for _ in range(n):
        ns += rng.randrange(0, 800_000_000)
        token = rng.choice((1, 2, 3))
        qty = rng.randrange(1, 40)
        cumulative[token] += qty
        stamp = ns - rng.randrange(0, 90 * 10**9) if rng.random() < 0.01 else ns  # a late one
        out.append({"token": token, "symbol": f"S{token}", "last_price": round(rng.uniform(99, 101), 2),
                    "last_qty": qty, "volume": cumulative[token], "oi": rng.randrange(0, 1000), "exchange_ts": stamp})
    return out


def reference_bars(ticks: list[dict[str, Any]], minutes: int) -> tuple[list[tuple[Any, ...]], int]:
    """The bars by the rule in candles.py, worked out with datetimes: a tick counts when its minute of
    IST wall time is not before the newest minute seen; a bar is emitted when a later minute starts."""
    def minute(tick: dict[str, Any]) -> datetime:
        wall = datetime.fromtimestamp(tick["exchange_ts"] / 1e9, UTC).astimezone(IST)
        since_midnight = wall - wall.replace(hour=0, minute=0, second=0, microsecond=0)
        whole = timedelta(minutes=minutes) * (since_midnight // timedelta(minutes=minutes))
        return wall.replace(hour=0, minute=0, second=0, microsecond=0) + whole

    groups: dict[datetime, dict[int, list[dict[str, Any]]]] = {}
    traded: dict[int, int] = {}  # a late tick's trades happened: they count with the symbol's next tick
    newest, late = None, 0
    for tick in ticks:
        m = minute(tick)
        traded[tick["token"]] = traded.get(tick["token"], 0) + tick["last_qty"]
        if newest is not None and m < newest:
            late += 1
            continue
        newest = m
        groups.setdefault(m, {}).setdefault(tick["token"], []).append({**tick, "traded": traded.pop(tick["token"])})
    bars = []
    for m in sorted(groups):
        for token, ts in groups[m].items():
            prices = [t["last_price"] for t in ts]
            bars.append((token, int(m.timestamp()) * 10**9, prices[0], max(prices), min(prices), prices[-1],
                         sum(t["traded"] for t in ts), ts[-1]["oi"], len(ts)))
    return bars, late


def as_tuple(bar: Bar) -> tuple[Any, ...]:
    return (bar.token, bar.start_ns, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.oi, bar.ticks)


@pytest.mark.parametrize(("seed", "minutes"), [(1, 1), (2, 1), (3, 5), (4, 15)])
def test_bars_match_a_reference_computed_another_way(seed: int, minutes: int) -> None:
    ticks = random_ticks(seed)
    builder = CandleBuilder(minutes * 60)
    ours = [as_tuple(bar) for tick in ticks for bar in builder.on_tick(tick, tick_key(tick))]
    ours += [as_tuple(bar) for bar in builder.flush()]
    expected, late = reference_bars(ticks, minutes)
    assert ours == expected
    assert builder.late == late > 0


def test_a_falling_cumulative_volume_starts_counting_afresh() -> None:
    builder = CandleBuilder(60)
    base = int(datetime(2026, 11, 23, 9, 15, tzinfo=IST).timestamp()) * 10**9
    for ts, volume, qty in ((0, 1000, 10), (1, 1030, 30), (2, 50, 50), (3, 60, 10)):
        builder.on_tick({"token": 7, "symbol": "X", "last_price": 10.0, "volume": volume, "last_qty": qty,
                         "exchange_ts": base + ts * 10**9}, "7|X|")
    (bar,) = builder.flush()
    assert bar.volume == 10 + 30 + 50 + 10


def test_instruments_without_a_token_get_bars_of_their_own() -> None:
    """A tick CSV may leave the token out (0 for every row): the frame key still tells symbols apart."""
    builder = CandleBuilder(60)
    base = int(datetime(2026, 11, 23, 9, 15, tzinfo=IST).timestamp()) * 10**9
    for symbol, price in (("A", 10.0), ("B", 20.0), ("A", 11.0)):
        tick = {"token": 0, "symbol": symbol, "underlying": symbol, "last_price": price, "exchange_ts": base}
        builder.on_tick(tick, tick_key(tick))
    assert sorted((bar.symbol, bar.open, bar.close, bar.ticks) for bar in builder.flush()) == [
        ("A", 10.0, 11.0, 2), ("B", 20.0, 20.0, 1)]


@pytest.mark.parametrize("damage", [{"last_price": "101.5"}, {"exchange_ts": None}, {"volume": 1.5}, {"oi": True},
                                    {"symbol": 7}, {"last_price": None}, {"last_price": 0.0}])
def test_a_malformed_tick_is_counted_and_changes_nothing(damage: dict[str, Any]) -> None:
    base = int(datetime(2026, 11, 23, 9, 15, tzinfo=IST).timestamp()) * 10**9
    good = {"token": 1, "symbol": "X", "last_price": 10.0, "volume": 100, "last_qty": 1, "oi": 0, "exchange_ts": base}
    builder = CandleBuilder(60)
    builder.on_tick(good, "1|X|")
    assert builder.on_tick({**good, "exchange_ts": base + 61 * 10**9, **damage}, "1|X|") == []
    assert builder.malformed == 1
    (bar,) = builder.flush()  # still open: the damaged tick of the next minute closed nothing
    assert (bar.open, bar.close, bar.ticks, bar.volume) == (10.0, 10.0, 1, 1)


def test_bars_align_to_the_session_in_ist() -> None:
    builder = CandleBuilder(900)
    at = datetime(2026, 11, 23, 9, 29, 59, tzinfo=IST)
    builder.on_tick({"token": 1, "symbol": "X", "last_price": 1.0, "exchange_ts": int(at.timestamp() * 1e9)}, "1|X|")
    (bar,) = builder.flush()
    assert datetime.fromtimestamp(bar.start_ns / 1e9, IST).time().isoformat() == "09:15:00"


def test_bar_seconds_must_divide_a_day(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text("[daemons.marketdata]\nbar_seconds = 7\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "daemons.marketdata.bar_seconds" in str(info.value)


# -- indicators ---------------------------------------------------------------------------------------


def make_bars(n: int, seed: int) -> list[Bar]:
    rng = random.Random(seed)
    close, bars = 100.0, []
    for i in range(n):
        bar = Bar("1|X|", 1, "X", i * 60 * 10**9, close, 1000 + 10 * i)
        bar.close = close * math.exp(rng.gauss(0, 0.01))
        bar.high = max(bar.open, bar.close) + rng.random()
        bar.low = min(bar.open, bar.close) - rng.random()
        bars.append(bar)
        close = bar.close
    return bars


def test_indicators_follow_their_definitions() -> None:
    periods = Periods(ema_fast=5, ema_slow=10, rsi=14, atr=14, volatility=20)
    bars = make_bars(60, seed=5)
    state = Indicators(periods)
    got = [dict(zip(FEATURES, state.update(bar), strict=True)) for bar in bars]
    closes = [b.close for b in bars]

    ema = closes[0]
    for c in closes[1:]:
        ema = ema * (1 - 2 / 6) + c * 2 / 6
    assert got[-1]["ema_fast"] == pytest.approx(ema)

    changes = [b - a for a, b in pairwise(closes)]
    up = statistics.mean(max(c, 0) for c in changes[:14])
    down = statistics.mean(max(-c, 0) for c in changes[:14])
    assert math.isnan(got[13]["rsi"]) and got[14]["rsi"] == pytest.approx(100 - 100 / (1 + up / down))
    for c in changes[14:]:
        up, down = (up * 13 + max(c, 0)) / 14, (down * 13 + max(-c, 0)) / 14
    assert got[-1]["rsi"] == pytest.approx(100 - 100 / (1 + up / down))

    trs = [bars[0].high - bars[0].low] + [max(b.high - b.low, abs(b.high - a.close), abs(b.low - a.close))
                                          for a, b in pairwise(bars)]
    atr = statistics.mean(trs[:14])
    assert math.isnan(got[12]["atr"]) and got[13]["atr"] == pytest.approx(atr)
    for tr in trs[14:]:
        atr = (atr * 13 + tr) / 14
    assert got[-1]["atr"] == pytest.approx(atr)

    returns = [math.log(b / a) for a, b in pairwise(closes)]
    assert got[-1]["return"] == pytest.approx(returns[-1]) and math.isnan(got[0]["return"])
    assert got[-1]["volatility"] == pytest.approx(statistics.stdev(returns[-20:]))
    assert math.isnan(got[19]["volatility"]) and not math.isnan(got[20]["volatility"])
    assert got[-1]["oi_change"] == 10.0 and math.isnan(got[0]["oi_change"])


# -- replay: the same bars and features from a recorded day ---------------------------------------------


def session(ticks: list[dict[str, Any]]) -> list[Any]:
    stage = FeatureStage(60, 50, Periods())
    out = []
    for tick in ticks:
        stage.on_tick(tick, tick_key(tick))
        while stage.pending:
            out.append(stage.close_next())
    stage.flush()
    while stage.pending:
        out.append(stage.close_next())
    return out


def test_a_replayed_day_gives_identical_bars_and_features(tmp_path: Path) -> None:
    """The simulator's ticks journaled as the journal writes them (one JSON envelope a line), then read
    back by the replay feed: every payload is the same, byte for byte once encoded."""
    sim = MarketSimulator(universe(), seed=11, clock=SessionClock(DAY, 400))
    live = [tick for _ in range(400) for tick in sim.step()]
    day = tmp_path / DAY.isoformat()
    day.mkdir()
    with open(day / "events.jsonl", "wb") as f:
        for n, tick in enumerate(live, 1):
            f.write(orjson.dumps({"id": f"m-{n}", "ts": n, "type": "marketdata.tick", "source": "marketdata", "seq": n,
                                  "trace": f"m-{n}", "payload": tick}) + b"\n")
    again = [tick for _, tick in replayed(day)]
    original, replay = session(live), session(again)
    assert len(original) == len(universe()) * 376  # each instrument: a bar a minute 09:15-15:29, and the closing tick at 15:30
    assert orjson.dumps(replay) == orjson.dumps(original)


# -- the cache and its snapshot -------------------------------------------------------------------------


def test_a_snapshot_carries_the_last_bars_oldest_first() -> None:
    cache = FeatureCache(capacity=8)
    bars = make_bars(20, seed=3)
    state = Indicators(Periods())
    rows = []
    for bar in bars:
        features = state.update(bar)
        cache.append(bar, features)
        rows.append([bar.start_ns // 10**9, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.oi, *features])
    ((_, ring),) = cache.select(["X"])
    payload = orjson.loads(orjson.dumps(snapshot(ring, "strategy-x", 60)))
    assert payload["to"] == "strategy-x" and payload["columns"] == list(COLUMNS) and payload["rows"] == 8
    np.testing.assert_array_equal(snapshot_rows(payload), np.array(rows[-8:]))
    # each row as a features.bar carries it: the bar's end, the features with null while warming up
    assert snapshot_bars(payload) == [((row[0] + 60) * 10**9, [None if math.isnan(x) else x for x in row[7:]])
                                      for row in rows[-8:]]
    assert cache.select(["Y"]) == []


def test_the_feed_answers_features_sync_per_symbol_and_refuses_a_malformed_one() -> None:
    feed = MarketdataDaemon(FleetConfig(), DaemonMetrics("marketdata"))
    assert feed.stage is not None
    feed.stage.cache.symbols = None  # every symbol's history, as for a strategy reading every symbol's bars
    sent: list[tuple[str, dict[str, Any], str]] = []

    def capture(topic: str, payload: dict[str, Any], *, key: str = "", trace: str | None = None) -> Event:
        sent.append((topic, payload, key))
        return Event(topic, "marketdata", 1, payload, "m-1", 0, trace or "m-1", key)

    feed.bus.publish = capture  # type: ignore[method-assign]
    feed_with_bars(feed, 10, MarketSimulator(universe(), seed=2, clock=SessionClock(DAY, 400)))

    async def sync(payload: dict[str, Any]) -> None:
        """One request, answered in full (slices of SNAPSHOT_SLICE symbols)."""
        feed._on_sync(Event("features.sync", "strategy-x", 1, payload, "x-1", 0, "x-1"))
        answer = asyncio.create_task(feed._answer_syncs())
        while feed._syncs or feed._sync_wanted.is_set():
            await asyncio.sleep(0)
        await asyncio.sleep(SNAPSHOT_PAUSE_SEC * (len(universe()) // SNAPSHOT_SLICE + 2))  # its last slice's pause
        answer.cancel()

    asyncio.run(sync({"symbols": ["NIFTY 50", "INFY", "NO SUCH"]}))
    assert [(p["symbol"], p["to"]) for _, p, _ in sent] == [("NIFTY 50", "strategy-x"), ("INFY", "strategy-x")]
    assert {topic for topic, _, _ in sent} == {"features.snapshot"} and sent[0][2] == "256265|NIFTY 50|NIFTY 50"
    sent.clear()
    asyncio.run(sync({"symbols": "NIFTY 50"}))
    assert sent == [] and feed.syncs_refused._value.get() == 1
    asyncio.run(sync({"requester": "strategy-y"}))
    assert len(sent) == len(universe()) > SNAPSHOT_SLICE and {p["to"] for _, p, _ in sent} == {"strategy-y"}
    assert feed.snapshots._value.get() == 2 + len(universe())


def feed_with_bars(feed: MarketdataDaemon, minutes: int, sim: MarketSimulator) -> None:
    """``minutes`` of the simulator's ticks through the feed's stage, every closed bar taken."""
    assert feed.stage is not None
    for _ in range(minutes):
        for tick in sim.step():
            feed.stage.on_tick(tick, tick_key(tick))
        while feed.stage.pending:
            feed.stage.close_next()


def test_the_cache_keeps_history_only_for_what_strategies_read_or_ask_for(tmp_path: Path) -> None:
    """A ring per symbol of a 9,000-instrument universe is ~120 MB: only the symbols the configured
    strategies that read bars watch, and those a features.sync names from then on."""
    (tmp_path / "fleet.toml").write_text(
        '[[daemons.equity.strategies]]\nname = "model-infy"\nkind = "model"\n'
        'params = { model = "/etc/algo/models/m.onnx", symbol = "INFY", quantity = 1 }\n'
        '[[daemons.fno.strategies]]\nname = "trend"\nkind = "ema_crossover"\n'  # reads ticks, not bars
        'params = { symbol = "RELIANCE", quantity = 1 }\n')
    config = load_config(tmp_path / "fleet.toml")
    assert bar_symbols(config) == frozenset({"INFY"})
    feed = MarketdataDaemon(config, DaemonMetrics("marketdata"))
    assert feed.stage is not None
    sim = MarketSimulator(universe(), seed=2, clock=SessionClock(DAY, 400))
    feed_with_bars(feed, 5, sim)
    assert [ring.symbol for ring in feed.stage.cache.rings.values()] == ["INFY"]
    assert feed.stage.closed == 4 * len(universe())  # every symbol's bars and features are still published
    feed._on_sync(Event("features.sync", "x", 1, {"symbols": ["NIFTY 50"]}, "x-1", 0, "x-1"))
    feed._on_sync(Event("features.sync", "x", 2, {}, "x-2", 0, "x-2"))  # every symbol: what is kept, no more
    feed_with_bars(feed, 3, sim)
    assert [(r.symbol, r.count) for r in feed.stage.cache.rings.values()] == [("INFY", 7), ("NIFTY 50", 3)]


def test_the_feed_is_unhealthy_when_its_bar_publisher_died() -> None:
    """The watchdog then restarts the feed instead of it running on without bars and features."""
    feed = MarketdataDaemon(FleetConfig(), DaemonMetrics("marketdata"))
    assert feed.stage is not None and feed.health() is None

    def broken() -> tuple[str, dict[str, Any], dict[str, Any]]:
        raise RuntimeError("a bug in an indicator")

    feed.stage.close_next = broken  # type: ignore[method-assign]

    async def run() -> None:
        feed._tasks = [asyncio.create_task(feed._publish_bars())]
        assert feed.stage is not None
        feed.stage.rest.append(Bar("1|X|", 1, "X", 0, 10.0, 0))
        feed._bars_closed.set()
        with pytest.raises(RuntimeError):
            await feed._tasks[0]

    asyncio.run(run())
    assert feed.health() == "bars and features stopped: RuntimeError('a bug in an indicator')"


def test_the_bars_strategies_read_go_out_first_and_the_rest_paced_behind_the_ticks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A minute closes a bar for every instrument of the universe at once. The bars of symbols a strategy reads
    go out first, in one go; the rest (for the journal) a slice at a time, REST_OF_BARS_PAUSE_SEC apart, so a
    tick published meanwhile waits behind one slice at the broker, not behind the whole universe's minute."""
    import daemons.marketdata.main as feed_module

    monkeypatch.setattr(feed_module, "STEP_SLICE", 4)  # slices of a handful: the test universe is small
    (tmp_path / "fleet.toml").write_text(
        '[[daemons.equity.strategies]]\nname = "model-infy"\nkind = "model"\n'
        'params = { model = "/etc/algo/models/m.onnx", symbol = "INFY", quantity = 1 }\n')
    feed = MarketdataDaemon(load_config(tmp_path / "fleet.toml"), DaemonMetrics("marketdata"))
    assert feed.stage is not None
    sim = MarketSimulator(universe(), seed=2, clock=SessionClock(DAY, 400))
    sent: list[tuple[float, str, str]] = []
    monkeypatch.setattr(feed.bus, "publish", lambda topic, payload, key="", trace=None: sent.append(
        (time.monotonic(), topic, payload["symbol"])))

    async def run() -> None:
        assert feed.stage is not None
        task = asyncio.create_task(feed._publish_bars())
        for _ in range(2):  # the second step closes the first minute's bars
            for tick in sim.step():
                feed.stage.on_tick(tick, tick_key(tick))
        feed._bars_closed.set()
        while feed.stage.pending or not sent:
            await asyncio.sleep(0.001)
        task.cancel()

    asyncio.run(run())
    bars = [(at, symbol) for at, topic, symbol in sent if topic == "features.bar"]
    assert len(bars) == len(universe()) and bars[0][1] == "INFY"
    assert all(symbol != "INFY" for _, symbol in bars[1:])
    rest = [at for at, _ in bars[1:]]
    slices = len(rest) // 4
    assert rest[-1] - rest[0] >= (slices - 1) * feed_module.REST_OF_BARS_PAUSE_SEC * 0.9, "paced"


def test_an_indicators_state_is_raw_doubles_not_float_objects() -> None:
    """One per symbol of the universe, all session: ~470 bytes each once warm (~660 with float objects)."""
    bars = []
    for n in range(30):
        bar = Bar("k", 1, "X", n, 100.0 + math.sin(n), 5)
        bar.high, bar.low, bar.oi = bar.open + 1.0, bar.open - 1.0, 1000 + n
        bars.append(bar)
    tracemalloc.start()
    try:
        held = [Indicators(Periods()) for _ in range(1000)]
        for state in held:
            for bar in bars:
                state.update(bar)
        per_symbol = tracemalloc.get_traced_memory()[0] / len(held)
    finally:
        tracemalloc.stop()
    assert per_symbol < 550


def test_a_kite_messages_ticks_all_leave_before_the_bar_stage_works_on_any_of_them() -> None:
    """The bars of a message's first ticks must not delay (and stamp late) its last: the live feed publishes a
    message's ticks together, as the simulator does a step's slice, and only then builds their bars."""
    feed = MarketdataDaemon(FleetConfig(), DaemonMetrics("marketdata"))
    assert feed.stage is not None
    ticks = MarketSimulator(universe(), seed=3, clock=SessionClock(DAY, 400)).step()
    written_when_staged: list[int] = []
    on_tick = feed.stage.on_tick

    def staging(tick: dict[str, Any], key: str) -> bool:
        written_when_staged.append(len(unsent_frames(feed.bus)))
        return on_tick(tick, key)

    feed.stage.on_tick = staging  # type: ignore[method-assign]
    feed._publish(ticks)
    assert len(ticks) > 1 and written_when_staged == [len(ticks)] * len(ticks)
    assert [orjson.loads(f.body)["payload"]["symbol"] for f in unsent_frames(feed.bus)] == [t["symbol"] for t in ticks]
    assert feed.ticks._value.get() == len(ticks) and feed.market_ns == ticks[-1]["exchange_ts"]
