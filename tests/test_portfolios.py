"""Portfolios (daemons/portfolios): sizing and risk checks for every portfolio at once against a
per-portfolio reference written here, one portfolio's limit blocking only that portfolio, netting,
and fill allocation accounting as property tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemons.portfolios.book import PortfolioBook
from daemons.portfolios.netting import AllocationError, NetOrder
from daemons.portfolios.portfolio import Portfolio, Reason, Signal
from daemons.portfolios.sizing import decide
from daemons.runtime.book import Position

LOT = 75


def fleet(n: int = 4, **overrides: object) -> list[Portfolio]:
    return [Portfolio(f"p{i}", capital=1_000_000.0 * (i + 1), strategies=frozenset({"ema"}), risk_fraction=0.1,
                      **overrides) for i in range(n)]  # type: ignore[arg-type]


def reference(p: Portfolio, held_lots: int, realised: float, s: Signal) -> tuple[int, Reason]:
    """One portfolio, by the rule in sizing.py, the slow way."""
    if s.strategy not in p.strategies:
        return 0, Reason.NOT_FOLLOWING
    if s.exit:
        if held_lots and (held_lots > 0) != (s.side > 0):
            return -held_lots, Reason.OK
        return 0, Reason.FLAT
    if not p.enabled:
        return 0, Reason.DISABLED
    if realised <= -p.daily_loss_limit:
        return 0, Reason.LOSS_LIMIT
    lot_value = s.price * s.lot_size
    if p.max_order_value < lot_value:
        return 0, Reason.ORDER_VALUE
    room = p.max_lots - s.side * held_lots
    if room <= 0:
        return 0, Reason.POSITION_LIMIT
    lots = min(int(min(p.capital * p.risk_fraction, p.max_order_value) / lot_value), room)
    return (lots * s.side, Reason.OK) if lots else (0, Reason.TOO_SMALL)


portfolio_st = st.builds(
    Portfolio, id=st.uuids().map(str), capital=st.floats(1e4, 1e8), strategies=st.sets(st.sampled_from("abc")).map(frozenset),
    risk_fraction=st.floats(0.001, 1.0), max_lots=st.integers(0, 50), max_order_value=st.floats(1e3, 1e7),
    daily_loss_limit=st.floats(1.0, 1e6), enabled=st.booleans())


@settings(max_examples=200, deadline=None)
@given(portfolios=st.lists(portfolio_st, min_size=1, max_size=30), data=st.data())
def test_decide_matches_one_portfolio_at_a_time(portfolios: list[Portfolio], data: st.DataObject) -> None:
    book = PortfolioBook(portfolios)
    n = len(portfolios)
    held = data.draw(st.lists(st.integers(-60, 60), min_size=n, max_size=n))
    realised = data.draw(st.lists(st.floats(-2e6, 2e6), min_size=n, max_size=n))
    book.position("X").quantity[:] = np.array(held) * LOT
    book.position("X").average[:] = 100.0
    book.realised[:] = realised
    signal = Signal(data.draw(st.sampled_from("abc")), "X", data.draw(st.sampled_from((1, -1))),
                    data.draw(st.floats(1.0, 1e5)), LOT, exit=data.draw(st.booleans()))
    intents = decide(book, signal)
    expected = [reference(p, h, r, signal) for p, h, r in zip(portfolios, held, realised, strict=True)]
    assert intents.lots.tolist() == [lots for lots, _ in expected]
    assert intents.reasons.tolist() == [int(reason) for _, reason in expected]


def test_a_portfolios_loss_limit_blocks_only_that_portfolio() -> None:
    book = PortfolioBook(fleet(4, daily_loss_limit=10_000.0))
    signal = Signal("ema", "NIFTY26DECFUT", 1, 240.0, LOT)
    before = decide(book, signal)
    assert (before.lots > 0).all()
    book.realised[2] = -10_000.0
    after = decide(book, signal)
    assert after.reasons.tolist() == [Reason.OK, Reason.OK, Reason.LOSS_LIMIT, Reason.OK]
    assert after.lots[2] == 0 and np.array_equal(np.delete(after.lots, 2), np.delete(before.lots, 2))
    exit_ = decide(book, signal._replace(side=-1, exit=True))  # getting out is never blocked
    assert exit_.reasons[2] == Reason.FLAT


def test_a_portfolios_position_limit_and_switch_block_only_that_portfolio() -> None:
    portfolios = fleet(3, max_lots=4)
    portfolios[0] = Portfolio("p0", 1_000_000.0, frozenset({"ema"}), risk_fraction=0.1, enabled=False)
    book = PortfolioBook(portfolios)
    book.position("X").quantity[1] = 4 * LOT
    intents = decide(book, Signal("ema", "X", 1, 100.0, LOT))
    assert intents.reasons.tolist() == [Reason.DISABLED, Reason.POSITION_LIMIT, Reason.OK]
    assert intents.lots.tolist() == [0, 0, 4]  # capped at max_lots
    assert decide(book, Signal("ema", "X", -1, 100.0, LOT)).lots.tolist() == [0, -8, -4]  # room the other way


def test_one_signal_nets_into_one_order_and_a_batch_crosses_inside() -> None:
    book = PortfolioBook(fleet(3))
    buy = decide(book, Signal("ema", "X", 1, 1000.0, LOT))
    order = NetOrder("X", LOT, buy.lots)
    assert order.lots == int(buy.lots.sum()) and order.quantity == order.lots * LOT
    sell = -buy.lots
    crossed = NetOrder("X", LOT, buy.lots, sell)
    assert crossed.lots == 0 and crossed.cross().tolist() == (buy.lots * 0).tolist()
    with pytest.raises(AllocationError):
        order.cross()


@settings(max_examples=300, deadline=None)
@given(intents=st.lists(st.integers(-40, 40), min_size=1, max_size=40).filter(lambda xs: sum(xs) != 0),
       lot=st.sampled_from((1, 15, 75)), data=st.data())
def test_fills_are_allocated_exactly(intents: list[int], lot: int, data: st.DataObject) -> None:
    """Any split of the order into fills: each allocation sums to its fill, has its intent's sign, is
    whole lots, never exceeds what is owed, and the last fill completes every intent."""
    order = NetOrder("X", lot, np.array(intents, dtype=np.int64))
    total = np.zeros(len(intents), dtype=np.int64)
    left = abs(order.lots)
    while left:
        lots = data.draw(st.integers(1, left))
        got = order.allocate(lots * lot)
        assert int(got.sum()) == lots * lot * np.sign(order.lots)
        assert (got % lot == 0).all() and (got * np.array(intents) >= 0).all()
        total += got
        assert (np.abs(total) <= np.abs(np.array(intents)) * lot).all()
        left -= lots
    assert total.tolist() == [x * lot for x in intents]
    with pytest.raises(AllocationError):
        order.allocate(lot)


def test_a_fill_of_part_of_a_lot_or_too_much_is_refused_and_changes_nothing() -> None:
    order = NetOrder("X", LOT, np.array([2, 1], dtype=np.int64))
    for bad in (LOT + 1, 4 * LOT, 0):
        with pytest.raises(AllocationError):
            order.allocate(bad)
    assert order.remaining.tolist() == [2, 1]


@settings(max_examples=200, deadline=None)
@given(fills=st.lists(st.tuples(st.lists(st.integers(-5, 5), min_size=3, max_size=3), st.floats(50.0, 150.0)),
                      min_size=1, max_size=30))
def test_portfolio_positions_and_pnl_match_the_fleets_position_arithmetic(
        fills: list[tuple[list[int], float]]) -> None:
    book = PortfolioBook(fleet(3))
    scalar = [Position() for _ in range(3)]
    for quantities, price in fills:
        book.fill("X", np.array(quantities, dtype=np.int64) * LOT, price)
        for pos, q in zip(scalar, quantities, strict=True):
            if q:
                pos.fill(q * LOT, price)
    arrays = book.position("X")
    assert arrays.quantity.tolist() == [p.quantity for p in scalar]
    for got, want in zip(arrays.average.tolist(), [p.average for p in scalar], strict=True):
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
    for got, want in zip(book.realised.tolist(), [p.realised for p in scalar], strict=True):
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-6)
