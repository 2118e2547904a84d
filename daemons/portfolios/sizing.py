"""One signal, every portfolio: risk checks and sizing as array operations.

For an entry, a following, enabled portfolio under its loss limit gets
``lots = floor(min(capital * risk_fraction, max_order_value) / (price * lot_size))`` (a float division,
truncated), cut to the room left under ``max_lots`` in the signal's direction; zero lots gives the
reason of highest precedence that applies (``Reason``). An exit closes a following portfolio's position against the signal's side
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


U8 = np.uint8


def decide(book: PortfolioBook, signal: Signal) -> Intents:
    """Branch-free on purpose: ``np.where`` on masks that vary from portfolio to portfolio costs several
    times a multiplication by a 0/1 view (mispredicted branches), so conditions are 0/1 arrays and the
    reason is the largest code that applies (``Reason`` is numbered by precedence)."""
    follows = book.followers(signal.strategy)
    held = book.position(signal.symbol).quantity // signal.lot_size  # lots
    side = signal.side
    not_following = (~follows).view(U8) * U8(Reason.NOT_FOLLOWING)
    if signal.exit:
        closing = follows & (np.sign(held) == -side)
        return Intents(-held * closing, np.maximum(not_following, (~closing).view(U8) * U8(Reason.FLAT)))
    lot_value = signal.price * signal.lot_size
    # floor(min(budget, order-value cap) / lot value): both are >= 0, so truncation is the floor
    room = book.max_lots - side * held
    lots = np.minimum((book.entry_cap / lot_value).astype(np.int64), room)
    reasons = np.maximum(np.maximum(not_following, book.standing()),
                         np.maximum((book.max_order_value < lot_value).view(U8) * U8(Reason.ORDER_VALUE),
                                    (room <= 0).view(U8) * U8(Reason.POSITION_LIMIT)))
    reasons = np.maximum(reasons, (lots <= 0).view(U8) * U8(Reason.TOO_SMALL))
    return Intents(lots * (reasons == Reason.OK) * side, reasons)
