"""A portfolio's definition, a signal as portfolios see it, and why an intent was refused."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Literal, NamedTuple


@dataclass(frozen=True)
class Portfolio:
    """One account or sub-book. Quantities are in lots of the signal's instrument."""

    id: str
    capital: float  # rupees
    strategies: frozenset[str]  # the strategies whose signals it follows
    risk_fraction: float = 0.02  # of capital, the notional of one entry
    max_lots: int = 10  # |position| per symbol
    max_order_value: float = 2_000_000.0  # rupees, one entry
    daily_loss_limit: float = 50_000.0  # rupees of realised loss today; beyond it, entries are refused
    enabled: bool = True  # False: entries refused, exits still go through

    def __post_init__(self) -> None:
        problems = [name for name, ok in (
            ("capital", self.capital > 0), ("risk_fraction", 0 < self.risk_fraction <= 1), ("max_lots", self.max_lots >= 0),
            ("max_order_value", self.max_order_value > 0), ("daily_loss_limit", self.daily_loss_limit > 0)) if not ok]
        if problems:
            raise ValueError(f"portfolio {self.id!r}: out of range: {', '.join(problems)}")


class Signal(NamedTuple):
    strategy: str
    symbol: str
    side: Literal[1, -1]  # 1 buy, -1 sell
    price: float  # the reference price sizing uses (the signal's tick)
    lot_size: int
    exit: bool = False  # close positions against ``side`` instead of opening


class Reason(IntEnum):
    """Why a portfolio's intent for a signal is zero (OK when it is not). When several apply, the
    largest value is the reason: the numbering is the precedence (sizing.py relies on it)."""

    OK = 0
    FLAT = 1  # an exit, and nothing to close
    TOO_SMALL = 2  # risk_fraction of capital buys less than one lot
    POSITION_LIMIT = 3  # already at max_lots in the signal's direction
    ORDER_VALUE = 4  # one lot is worth more than max_order_value
    LOSS_LIMIT = 5  # today's realised loss reached daily_loss_limit
    DISABLED = 6  # entries switched off for this portfolio
    NOT_FOLLOWING = 7  # the portfolio does not follow the signal's strategy
