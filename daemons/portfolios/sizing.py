"""One signal, every portfolio: risk checks and sizing as array operations.

For an entry, a following, enabled portfolio under its loss limit gets
``lots = floor(capital * risk_fraction / (price * lot_size))``, cut to what ``max_order_value`` allows
and to the room left under ``max_lots`` in the signal's direction; zero lots gives the first reason of
``Reason`` that applies. An exit closes a following portfolio's position against the signal's side
(whatever its limits: getting out is never blocked). Quantities are whole lots, so every intent and
every allocation (netting.py) is a multiple of the lot size.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .book import Ints, PortfolioBook
from .portfolio import Reason, Signal

Reasons = npt.NDArray[np.uint8]


class Intents(NamedTuple):
    """Per portfolio: signed lots wanted, and why not when zero."""

    lots: Ints
    reasons: Reasons


def decide(book: PortfolioBook, signal: Signal) -> Intents:
    follows = book.followers(signal.strategy)
    lots_held = book.position(signal.symbol).quantity // signal.lot_size
    side = signal.side
    if signal.exit:
        against = np.sign(lots_held) == -side
        lots = np.where(follows & against, -lots_held, 0)
        reasons = np.where(~follows, Reason.NOT_FOLLOWING, np.where(lots == 0, Reason.FLAT, Reason.OK))
        return Intents(lots.astype(np.int64), reasons.astype(np.uint8))
    lot_value = signal.price * signal.lot_size
    wanted = np.floor(book.capital * book.risk_fraction / lot_value).astype(np.int64)
    value_cap = np.floor(book.max_order_value / lot_value).astype(np.int64)
    room = np.maximum(book.max_lots - side * lots_held, 0)
    lots = np.minimum(np.minimum(wanted, value_cap), room)
    allowed = follows & book.enabled & (book.realised > -book.daily_loss_limit)
    lots = np.where(allowed, lots, 0)
    reasons = np.select(
        [~follows, ~book.enabled, book.realised <= -book.daily_loss_limit, value_cap == 0, room == 0, lots == 0],
        [Reason.NOT_FOLLOWING, Reason.DISABLED, Reason.LOSS_LIMIT, Reason.ORDER_VALUE, Reason.POSITION_LIMIT,
         Reason.TOO_SMALL], Reason.OK)
    return Intents(lots * side, reasons.astype(np.uint8))
