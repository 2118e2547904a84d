"""Every signal passes these checks before it can become an order. Pure: the daemon feeds it
fills, marks and the market's clock; tests feed it the same."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from ..runtime.book import PositionBook
from ..runtime.calendar import IST, is_trading_day
from ..runtime.config import MarketSection, RiskSection


class Decision(NamedTuple):
    approved: bool
    code: str  # short and fixed: a metric label ("approved", "rate_limit", ...)
    reason: str  # for people: why it was blocked; "" when approved


APPROVED = Decision(True, "approved", "")
# Every code a decision can carry (the metric's label values, exported from the start at 0).
CODES = ("approved", "kill_switch", "no_price", "holiday", "hours", "price_band", "order_value", "max_quantity",
         "max_notional", "max_positions", "loss_limit", "rate_limit", "malformed",
         "no_lot_size", "portfolios", "state_disk")


class RateLimiter:
    """Token bucket: ``rate`` orders per second, bursts up to ``rate``."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.at: float | None = None

    def take(self, now: float) -> bool:
        if self.at is not None:
            self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class RiskRules:
    def __init__(self, limits: RiskSection, market: MarketSection) -> None:
        self.limits = limits
        self.market = market  # its hours and holidays
        self.book = PositionBook()  # per (engine, symbol): the engine and fleet limits
        self.strategies = PositionBook()  # per (strategy, symbol): the strategy limits
        self.rate = RateLimiter(limits.orders_per_second)
        self.kill_switch: str | None = None  # why it is engaged, or None
        self.market_ns: dict[str, int] = {}  # symbol -> exchange time of its last tick

    def fill(self, engine: str, strategy: str, symbol: str, side: str, quantity: int, price: float) -> None:
        self.book.fill(engine, symbol, side, quantity, price)
        self.strategies.fill(strategy, symbol, side, quantity, price)

    def mark(self, symbol: str, price: float, exchange_ns: int) -> None:
        self.book.marks[symbol] = price
        self.strategies.marks[symbol] = price
        self.market_ns[symbol] = exchange_ns

    def engage(self, why: str) -> bool:
        """Engage the kill switch; False when it already was."""
        if self.kill_switch is not None:
            return False
        self.kill_switch = why
        return True

    def check(self, signal: dict[str, Any], now: float) -> Decision:
        """``signal`` is a strategy.signal payload; ``now`` a monotonic clock for the rate limit."""
        lim, book = self.limits, self.book
        symbol, side, qty, engine = signal["symbol"], signal["side"], signal["quantity"], signal["engine"]
        entry = bool(signal["entry"])
        if entry and self.kill_switch:
            return Decision(False, "kill_switch", f"kill switch engaged: {self.kill_switch}")
        # The signal's own tick is a mark too: on the bus a signal may overtake the tick that caused it.
        at, tick_price = signal.get("tick_exchange_ts"), signal.get("tick_price")
        if type(at) is int and isinstance(tick_price, (int, float)) and type(tick_price) is not bool \
                and at > self.market_ns.get(symbol, 0):
            self.mark(symbol, float(tick_price), at)
        last = book.marks.get(symbol)
        if last is None:
            return Decision(False, "no_price", f"no market price for {symbol} yet")
        when = datetime.fromtimestamp(self.market_ns[symbol] / 1e9, IST)
        if not is_trading_day(when.date(), self.market.holidays):
            return Decision(False, "holiday", f"{when.date()} ({when:%A}) is not a trading day")
        if not self.market.open <= when.time() < self.market.close:
            return Decision(False, "hours", f"outside trading hours ({when:%H:%M} IST)")
        price = signal.get("limit_price") or last
        if signal.get("limit_price") and abs(price - last) / last * 100 > lim.price_band_pct:
            return Decision(False, "price_band", f"limit {price:g} is more than {lim.price_band_pct:g}% from last {last:g}")
        if qty * price > lim.max_order_value:
            return Decision(False, "order_value", f"order value {qty * price:,.0f} exceeds {lim.max_order_value:,.0f}")
        held = book.quantity(symbol)
        after = held + (qty if side == "BUY" else -qty)
        if abs(after) > abs(held):  # adds exposure: the position limits apply
            cap = lim.max_quantity_by_symbol.get(symbol, lim.max_quantity)
            if abs(after) > cap:
                return Decision(False, "max_quantity", f"position {after} would exceed {cap} for {symbol}")
            if abs(after) * last > lim.max_notional:
                return Decision(False, "max_notional",
                                f"position value {abs(after) * last:,.0f} would exceed {lim.max_notional:,.0f}")
            if held == 0 and len(book.open_symbols()) >= lim.max_open_positions:
                return Decision(False, "max_positions", f"already {lim.max_open_positions} open positions")
            breach = self.loss_breach(engine) or self.strategy_breach(str(signal.get("strategy")))
            if breach:
                return Decision(False, "loss_limit", breach)
        if not self.rate.take(now):
            return Decision(False, "rate_limit", f"order rate limit ({lim.orders_per_second:g}/s)")
        return APPROVED

    def strategy_breach(self, strategy: str) -> str | None:
        """A strategy over its own limit: only its entries are blocked (no kill switch)."""
        limit = self.limits.strategy_daily_loss_limit.get(strategy)
        realised, unrealised = self.strategies.pnl(strategy)
        if limit is not None and realised + unrealised <= -limit:
            return f"{strategy} daily loss {realised + unrealised:,.0f} breached its limit {limit:,.0f}"
        return None

    def loss_breach(self, engine: str) -> str | None:
        """Why new exposure is not allowed because of losses, or None."""
        realised, unrealised = self.book.pnl(engine)
        limit = self.limits.daily_loss_limit.get(engine)
        if limit is not None and realised + unrealised <= -limit:
            return f"{engine} daily loss {realised + unrealised:,.0f} breached its limit {limit:,.0f}"
        realised, unrealised = self.book.pnl()
        if realised + unrealised <= -self.limits.fleet_daily_loss_limit:
            return f"fleet daily loss {realised + unrealised:,.0f} breached {self.limits.fleet_daily_loss_limit:,.0f}"
        return None
