"""The paper market: deterministic, consistent across instruments, in Kite's shapes."""

from __future__ import annotations

import math
import tracemalloc
from datetime import date, time
from pathlib import Path
from typing import Any

import pytest

from daemons.kite_emulator import datafiles
from daemons.marketdata.contracts import derivatives, monthly_expiry, weekly_expiry
from daemons.marketdata.instruments import Instrument, InstrumentsError, load_instruments
from daemons.marketdata.session import SessionClock
from daemons.marketdata.simulator import RATE, MarketSimulator
from daemons.runtime.calendar import last_trading_day
from daemons.runtime.config import MarketSection
from tests.conftest import REPO

DAY = date(2026, 11, 23)  # a Monday
PAPER = REPO / "configs" / "instruments" / "paper.csv"


def universe() -> list[Instrument]:
    spots = load_instruments(PAPER)
    nifty = next(i for i in spots if i.symbol == "NIFTY 50")
    return spots + derivatives(nifty, DAY, lot_size=75, strikes=5, step=50)


def run(seed: int, steps: int = 50) -> list[list[dict[str, Any]]]:
    sim = MarketSimulator(universe(), seed=seed, clock=SessionClock(DAY, 1000))
    return [sim.step() for _ in range(steps)]


def test_the_simulators_state_is_flat_arrays() -> None:
    """~60 bytes an instrument beyond the instruments themselves (an object and dict entries each were ~270)."""
    stocks = [Instrument(5_000_000 + n, f"SYN{n:05d}", f"SYNTHETIC {n}", 100.0 + n, None, 0.0, 0.05, 1, "EQ", "NSE", "NSE")
              for n in range(9000)]
    tracemalloc.start()
    try:
        sim = MarketSimulator(stocks, seed=1, clock=SessionClock(DAY, 1000))
        for _ in range(3):
            sim.step()
        per_instrument = tracemalloc.get_traced_memory()[0] / len(stocks)
    finally:
        tracemalloc.stop()
    assert per_instrument < 100


def test_instruments_that_share_a_token_share_a_book() -> None:
    """A dump that lists a token twice: its ticks count one volume and one open interest, the last row's."""
    spots = load_instruments(PAPER)
    nifty = next(i for i in spots if i.symbol == "NIFTY 50")
    future = derivatives(nifty, DAY, lot_size=75, strikes=1, step=50)[0]
    sim = MarketSimulator([future, future._replace(symbol="AGAIN")], seed=1, clock=SessionClock(DAY, 1000))
    first, again = sim.step()
    assert again["volume"] == first["volume"] + again["last_qty"]
    assert abs(again["oi"] - first["oi"]) <= 20 * 75  # one book moving, not two drawn apart


def test_same_seed_same_market_other_seed_other_market() -> None:
    assert run(7) == run(7)
    assert run(7) != run(8)


def test_a_step_made_slice_by_slice_is_the_same_market() -> None:
    """algo-marketdata makes a step's ticks a slice at a time (never all 9,000 held at once): same draws, same ticks."""
    sliced = MarketSimulator(universe(), seed=7, clock=SessionClock(DAY, 1000))
    steps = []
    for _ in range(50):
        n = sliced.advance()
        steps.append([tick for first in range(0, n, 3) for tick in sliced.ticks(first, min(n, first + 3))])
    assert steps == run(7)


def test_ticks_are_sane_and_on_the_session_clock() -> None:
    ticks = run(1, steps=1000)
    clock = SessionClock(DAY, 1000)
    assert clock.label(0) == "09:15:00 IST" and clock.label(1000) == "15:30:00 IST"
    assert ticks[-1][0]["exchange_ts"] == clock.at(1000)
    for step in ticks[::100]:
        for t in step:
            assert 0 < t["bid"] < t["ask"] and t["bid"] <= t["last_price"] <= t["ask"]
            assert round(t["last_price"] / 0.05, 6) == round(t["last_price"] / 0.05)
    volumes = [s[2]["volume"] for s in ticks]
    assert volumes == sorted(volumes) and volumes[-1] > volumes[0]


def test_the_simulated_session_runs_the_fleets_market_hours() -> None:
    """[market]'s hours, not NSE's defaults: a shorter session maps its steps onto its own open and close."""
    clock = SessionClock(DAY, 60, MarketSection(open=time(10, 0), close=time(11, 0)))
    assert clock.label(0) == "10:00:00 IST" and clock.label(30) == "10:30:00 IST" and clock.label(60) == "11:00:00 IST"


def test_futures_and_options_follow_their_underlying() -> None:
    sim = MarketSimulator(universe(), seed=3, clock=SessionClock(DAY, 500))
    for _ in range(200):
        by_symbol = {t["symbol"]: t for t in sim.step()}
    fut = next(i for i in sim.instruments if i.type == "FUT")
    spot = sim.spot(sim.instruments.index(fut))
    assert by_symbol["NIFTY 50"]["last_price"] == pytest.approx(spot, abs=0.05)  # the future's underlying: the index
    assert sim.price(sim.instruments.index(fut)) > spot  # carry: the future trades above the index
    years = sim._years_to_expiry(fut.expiry)
    assert sim.price(sim.instruments.index(fut)) == pytest.approx(spot * (1 + RATE * years), rel=1e-3)
    # Put-call parity on every strike of the chain: C - P = (F - K) * exp(-rT), to the rounding.
    calls = {i.strike: i for i in sim.instruments if i.type == "CE"}
    for put in (i for i in sim.instruments if i.type == "PE"):
        call = calls[put.strike]
        t = sim._years_to_expiry(put.expiry)
        forward = spot * math.exp(RATE * t)
        parity = (forward - put.strike) * math.exp(-RATE * t)
        quoted = by_symbol[call.symbol]["last_price"] - by_symbol[put.symbol]["last_price"]
        assert quoted == pytest.approx(parity, abs=0.15)


def test_expiries_and_contract_names() -> None:
    assert monthly_expiry(date(2026, 11, 23)) == date(2026, 11, 26)
    assert monthly_expiry(date(2026, 11, 27)) == date(2026, 12, 31)
    assert weekly_expiry(date(2026, 11, 23)) == date(2026, 11, 26)
    names = [i.symbol for i in universe() if i.expiry]
    assert names[0] == "NIFTY26NOVFUT" and "NIFTY26112624350CE" in names and len(names) == 1 + 2 * 11


def test_expired_contracts_are_left_out() -> None:
    later = date(2026, 12, 1)
    sim = MarketSimulator(universe(), seed=1, clock=SessionClock(later, 10))
    assert sim.expired == 23 and all(i.expiry is None for i in sim.instruments)


@pytest.mark.parametrize(("today", "session"), [
    (date(2026, 12, 3), date(2026, 12, 3)),    # a Thursday
    (date(2026, 12, 6), date(2026, 12, 4)),    # Sunday -> Friday
    (date(2026, 12, 25), date(2026, 12, 24)),  # Christmas (a Friday) -> Thursday
    (date(2026, 12, 27), date(2026, 12, 24)),  # the Sunday after it, past Saturday and the holiday
])
def test_the_default_paper_session_is_the_last_trading_day(today: date, session: date) -> None:
    assert last_trading_day(today, {date(2026, 12, 25)}) == session


def test_the_kite_emulators_dump_loads_and_bad_rows_name_their_line(tmp_path: Path) -> None:
    dump = tmp_path / "dump.csv"
    dump.write_text(datafiles.text("instruments.csv"))
    rows = load_instruments(dump)
    assert len(rows) == len(dump.read_text().splitlines()) - 1 and any(r.type == "CE" for r in rows)
    bad = tmp_path / "bad.csv"
    lines = PAPER.read_text().splitlines()
    bad.write_text("\n".join(lines[:3] + [lines[3].replace("1290.0", "lots")]))
    with pytest.raises(InstrumentsError, match=r"bad.csv:4: could not convert"):
        load_instruments(bad)
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InstrumentsError, match="not a Kite instruments dump"):
        load_instruments(tmp_path / "x.csv")
    with pytest.raises(InstrumentsError, match=r"missing\.csv: No such file"):
        load_instruments(tmp_path / "missing.csv")


def test_a_dumps_repeated_values_are_one_object_each(tmp_path: Path) -> None:
    """Held for the whole session, a value per row of a 9,000-row dump would be ~0.2 MB per column."""
    dump = tmp_path / "dump.csv"
    dump.write_text(datafiles.text("instruments.csv"))
    rows = load_instruments(dump)
    for column in ("strike", "tick_size", "expiry", "type", "segment", "exchange"):
        values = [getattr(r, column) for r in rows]
        assert len({id(v) for v in values}) == len({v for v in values}), column


def test_a_large_step_leaves_in_slices_not_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop turns (and the bus flushes) between slices of one step: the first ticks of a big
    universe's step do not wait for the whole step to be stamped."""
    import asyncio

    from daemons.marketdata.main import STEP_SLICE, MarketdataDaemon
    from daemons.runtime.config import FleetConfig
    from daemons.runtime.metrics import DaemonMetrics

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    config = FleetConfig.model_validate({"daemons": {"marketdata": {
        "instruments": str(PAPER), "session_date": DAY.isoformat(), "steps_per_second": 1000,
        "derivatives": [{"underlying": u, "lot_size": 75, "strikes": 50, "step": 50}
                        for u in ("NIFTY 50", "NIFTY BANK", "RELIANCE")]}}})

    async def go() -> tuple[int, list[int]]:
        md = MarketdataDaemon(config, DaemonMetrics("marketdata"))
        await md.setup()
        assert md.sim is not None
        runner = asyncio.create_task(md.run())
        seen = []
        for _ in range(20):
            await asyncio.sleep(0)
            seen.append(md.bus.published.get("marketdata.tick", 0))
        md.stopping.set()
        await runner
        return len(md.sim.instruments), seen

    size, seen = asyncio.run(go())
    assert size > 2 * STEP_SLICE
    assert any(n % size for n in seen), f"only whole steps of {size} ticks were ever seen: {seen}"


def test_spread_steps_publish_a_step_evenly_over_its_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With spread_steps a step's ticks leave in slices across the step, as a real feed's do, not as
    one burst at its start; every tick of the step is still published, in order, once."""
    import asyncio

    from daemons.marketdata.main import MarketdataDaemon
    from daemons.runtime.config import FleetConfig
    from daemons.runtime.metrics import DaemonMetrics

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    config = FleetConfig.model_validate({"daemons": {"marketdata": {
        "instruments": str(PAPER), "session_date": DAY.isoformat(), "steps_per_second": 5, "spread_steps": True}}})

    async def go() -> tuple[int, list[tuple[float, int]]]:
        md = MarketdataDaemon(config, DaemonMetrics("marketdata"))
        await md.setup()
        assert md.sim is not None
        loop = asyncio.get_running_loop()
        start = loop.time()
        runner = asyncio.create_task(md.run())
        seen = []
        while loop.time() - start < 0.19:  # within the first step (0.2 s)
            await asyncio.sleep(0.01)
            seen.append((loop.time() - start, md.bus.published.get("marketdata.tick", 0)))
        md.stopping.set()
        await runner
        return len(md.sim.instruments), seen

    size, seen = asyncio.run(go())
    halfway = max(n for t, n in seen if t <= 0.1)
    assert 0.3 * size <= halfway <= 0.7 * size, f"{halfway} of {size} ticks out by the middle of the step: {seen}"
    assert seen[-1][1] <= size


def test_a_slices_ticks_are_written_before_the_bar_stage_works_on_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The feature stage's work on a slice (bars, indicators: ~0.1 ms a slice at 10k ticks/s) comes after the
    slice's ticks were handed to the socket, not between them: a tick's way to the engines never waits for it."""
    import asyncio

    from daemons.marketdata.main import MarketdataDaemon
    from daemons.runtime.config import FleetConfig
    from daemons.runtime.metrics import DaemonMetrics

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    config = FleetConfig.model_validate({"daemons": {"marketdata": {
        "instruments": str(PAPER), "session_date": DAY.isoformat(), "steps_per_second": 50, "features": True}}})
    steps: list[tuple[str, str]] = []

    async def go() -> None:
        md = MarketdataDaemon(config, DaemonMetrics("marketdata"))
        await md.setup()
        assert md.stage is not None
        publish, flush, on_tick = md.bus.publish, md.bus.flush, md.stage.on_tick

        def published(topic: str, payload: dict[str, Any], **kw: Any) -> Any:
            if topic == "marketdata.tick":
                steps.append(("published", payload["symbol"]))
            return publish(topic, payload, **kw)

        def flushed() -> None:
            steps.append(("flushed", ""))
            flush()

        def staged(tick: dict[str, Any], key: str) -> bool:
            steps.append(("staged", tick["symbol"]))
            return on_tick(tick, key)

        monkeypatch.setattr(md.bus, "publish", published)
        monkeypatch.setattr(md.bus, "flush", flushed)
        monkeypatch.setattr(md.stage, "on_tick", staged)
        runner = asyncio.create_task(md.run())
        await asyncio.sleep(0.05)
        md.stopping.set()
        await runner

    asyncio.run(go())
    staged = [n for n, (what, _) in enumerate(steps) if what == "staged"]
    assert staged, steps[:10]
    for n in staged:
        symbol = steps[n][1]
        at = max(k for k in range(n) if steps[k] == ("published", symbol))
        assert ("flushed", "") in steps[at:n], f"{symbol} was staged before it was written: {steps[at:n + 1]}"


def test_step_slices_cover_the_step_once_in_order() -> None:
    from daemons.marketdata.main import STEP_SLICE, step_slices

    for n, spread in ((52, True), (9000, True), (9000, False), (1, True), (0, False)):
        slices = list(step_slices(n, 10.0, 0.5, spread))
        assert [i for a, b, _ in slices for i in range(a, b)] == list(range(n))
        assert all(b - a <= STEP_SLICE for a, b, _ in slices)
        whens = [w for _, _, w in slices]
        assert whens == sorted(whens) and whens[0] == 10.0 and whens[-1] < 10.5
        assert (whens[-1] > 10.4) == (spread and n > 1)


def test_a_chain_wider_than_the_price_lists_only_positive_strikes() -> None:
    """50 strikes of 50 either side of a 1,290 stock would reach -1,210: those are left out, and the
    rest price (it used to fail the simulator with a math domain error)."""
    reliance = next(i for i in load_instruments(PAPER) if i.symbol == "RELIANCE")
    chain = derivatives(reliance, DAY, lot_size=500, strikes=50, step=50)
    assert min(i.strike for i in chain if i.type in ("CE", "PE")) == 50
    sim = MarketSimulator([reliance, *chain], seed=1, clock=SessionClock(DAY, 10))
    assert all(t["last_price"] >= 0 for t in sim.step())
