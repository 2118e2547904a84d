"""A deterministic NSE-like market: spot prices walk, futures and options are priced from them.

Each underlying (an index or a stock) follows a geometric Brownian motion driven by a seeded RNG;
its futures trade at the cost-of-carry forward and its options at Black-76 on that forward, so an
options chain is always consistent with its underlying (put-call parity holds to the tick).
Every step advances the session clock by the same amount: the same seed and universe give the
same ticks, however fast the wall clock runs.
"""

from __future__ import annotations

import math
import random
from array import array
from datetime import date
from typing import Any

from .instruments import Instrument
from .session import SessionClock

RATE = 0.065  # annual risk-free rate for carry and discounting
YEAR_SECONDS = 365 * 24 * 3600
TRADING_DAYS_PER_YEAR = 252
VOL = {"INDICES": 0.14, "NSE": 0.24}  # annualised volatility by segment of the underlying
# Kite names derivatives of an index by a short name; the index itself has a longer one.
INDEX_OF = {"NIFTY": "NIFTY 50", "BANKNIFTY": "NIFTY BANK", "FINNIFTY": "NIFTY FIN SERVICE"}


def tick_round(price: float, tick: float) -> float:
    return round(round(price / tick) * tick, 2)


def _n(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def black76(forward: float, strike: float, years: float, vol: float, call: bool) -> float:
    """Option value on a forward, discounted at RATE (what NSE index options trade near)."""
    disc = math.exp(-RATE * years)
    if years <= 0 or vol <= 0:
        return disc * max(0.0, (forward - strike) if call else (strike - forward))
    sd = vol * math.sqrt(years)
    d1 = (math.log(forward / strike) + 0.5 * sd * sd) / sd
    d2 = d1 - sd
    if call:
        return disc * (forward * _n(d1) - strike * _n(d2))
    return disc * (strike * _n(-d2) - forward * _n(-d1))


class MarketSimulator:
    """The universe's state in flat arrays, a slot per underlying and per book, an index per instrument: a
    ``dict`` entry and objects per instrument were ~2.5 MB at 9,000, and their numbers, replaced every tick, were small objects
    interleaved with the ticks' that kept the allocator's pages from being freed (bench/pipeline/README.md,
    round 11)."""

    def __init__(self, instruments: list[Instrument], *, seed: int, clock: SessionClock) -> None:
        self.clock = clock
        self.rng = random.Random(seed)
        self.instruments = [i for i in instruments if i.expiry is None or i.expiry >= clock.day]
        self.expired = len(instruments) - len(self.instruments)
        self.prices = array("d")  # by underlying
        self.vols = array("d")
        spots: dict[str, int] = {}  # underlying -> its slot
        for inst in self.instruments:
            if inst.type == "EQ":
                self._underlying(spots, inst.symbol, inst.last_price or 100.0, VOL.get(inst.segment, 0.24), replace=True)
        # A book per token: what a tick reports beyond the price. Instruments that share a token share a book,
        # and the last one's underlying and opening interest.
        books: dict[int, int] = {}  # token -> its book's slot
        self.book_of = array("l")  # by instrument
        self.oi = array("q")  # open interest, by book
        underlying = array("l")  # by book
        for inst in self.instruments:
            if inst.type == "EQ":
                spot, opening = spots[inst.symbol], 0
            else:
                # a derivative whose underlying is not in the universe starts at its own price
                start = inst.last_price if inst.type == "FUT" and inst.last_price else (inst.strike or 100.0)
                spot = self._underlying(spots, INDEX_OF.get(inst.name, inst.name), start, VOL["NSE"], replace=False)
                opening = self.rng.randrange(10_000, 1_000_000)
            at = books.setdefault(inst.token, len(books))
            if at == len(self.oi):
                self.oi.append(opening)
                underlying.append(spot)
            else:
                self.oi[at], underlying[at] = opening, spot
            self.book_of.append(at)
        self.underlying_of = array("l", (underlying[at] for at in self.book_of))  # by instrument
        self.volume = array("q", bytes(8 * len(self.oi)))  # cumulative, by book
        self.step_no = 0
        self.now = 0  # the current step's exchange time, ns

    def _underlying(self, spots: dict[str, int], name: str, price: float, vol: float, *, replace: bool) -> int:
        """The slot of underlying ``name`` in ``spots``, added at ``price`` and ``vol`` if new (reset to them with
        ``replace``)."""
        at = spots.get(name)
        if at is None:
            at = spots[name] = len(self.prices)
            self.prices.append(price)
            self.vols.append(vol)
        elif replace:
            self.prices[at], self.vols[at] = price, vol
        return at

    def step(self) -> list[dict[str, Any]]:
        """Advance one step and return a tick for every instrument."""
        return self.ticks(0, self.advance())

    def advance(self) -> int:
        """Advance one step (the underlyings move) and return how many ticks it has: ``ticks`` makes them."""
        self.step_no += 1
        self.now = self.clock.at(self.step_no)
        dt = 1 / (TRADING_DAYS_PER_YEAR * self.clock.steps)  # a step's share of a trading year
        prices, gauss, root = self.prices, self.rng.gauss, math.sqrt(dt)
        for at, vol in enumerate(self.vols):
            prices[at] *= math.exp(-0.5 * vol * vol * dt + vol * root * gauss(0.0, 1.0))
        return len(self.instruments)

    def ticks(self, first: int, stop: int) -> list[dict[str, Any]]:
        """The current step's ticks of ``instruments[first:stop]``. Asked for slice after slice, in order (the
        same random draws as all at once), a step's ticks are never all alive together: ~12 MB at 9,000."""
        now = self.now
        return [self._tick(at, now) for at in range(first, stop)]

    def spot(self, at: int) -> float:
        """The price now of the underlying of ``instruments[at]``."""
        return self.prices[self.underlying_of[at]]

    def price(self, at: int) -> float:
        """The model price of ``instruments[at]`` now, before rounding to its tick."""
        inst, u = self.instruments[at], self.underlying_of[at]
        spot = self.prices[u]
        if inst.type == "EQ":
            return spot
        years = self._years_to_expiry(inst.expiry)
        forward = spot * math.exp(RATE * years)
        if inst.type == "FUT":
            return forward
        return black76(forward, inst.strike, years, self.vols[u], inst.type == "CE")

    def _years_to_expiry(self, expiry: date | None) -> float:
        if expiry is None:
            return 0.0
        # Whole days to expiry plus what is left of today's session (expiry settles at the close).
        left_today = (self.clock.steps - self.step_no) / self.clock.steps * self.clock.seconds
        return ((expiry - self.clock.day).days * 24 * 3600 + left_today) / YEAR_SECONDS

    def _tick(self, at: int, now: int) -> dict[str, Any]:
        inst = self.instruments[at]
        tick = inst.tick_size or 0.05  # Kite lists indices with tick_size 0
        lot = inst.lot_size or 1
        last = max(tick, tick_round(self.price(at), tick))
        spread = max(1, round(last * 0.0002 / tick)) * tick
        book = self.book_of[at]
        traded = self.rng.randrange(1, 50) * lot
        volume = self.volume[book] = self.volume[book] + traded
        oi = self.oi[book]
        if inst.type != "EQ":
            oi = self.oi[book] = max(0, oi + self.rng.randrange(-20, 21) * lot)
        return {
            "token": inst.token,
            "symbol": inst.symbol,
            "exchange": inst.exchange,
            "last_price": last,
            "last_qty": traded,
            "bid": tick_round(max(tick, last - spread), tick),
            "ask": tick_round(last + spread, tick),
            "bid_qty": self.rng.randrange(1, 200) * lot,
            "ask_qty": self.rng.randrange(1, 200) * lot,
            "volume": volume,
            "oi": oi,
            "exchange_ts": now,
            # What Kite's ticker leaves to the instruments dump; the feed adds it so engines need no lookup.
            "type": inst.type,
            "underlying": inst.name,
            "strike": inst.strike,
            "expiry": inst.expiry.isoformat() if inst.expiry else None,
            "lot_size": lot,
            "tick_size": tick,
        }
