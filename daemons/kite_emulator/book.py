"""The order book: Kite's order lifecycle and its fills against the emulator's own price.

Statuses and field sets are Kite's (docs/KITE.md; tests/conformance/ checks them against Kite's
recorded responses); what Kite does not tell is listed in docs/KITE_EMULATOR.md.
Every state change is also announced through ``on_update`` (the ticker's order updates), called with
the book's lock held, so it must only queue.
"""

from __future__ import annotations

import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..runtime.calendar import IST
from .errors import input_error
from .instruments import Instrument, Instruments

OPEN = "OPEN"
COMPLETE = "COMPLETE"
CANCELLED = "CANCELLED"
REJECTED = "REJECTED"
UPDATE = "UPDATE"  # the order-update status for a partial fill or a modification (Kite's postback docs)
TRANSACTION_TYPES = ("BUY", "SELL")
PRODUCTS = ("MIS", "CNC", "NRML")
ORDER_TYPES = ("MARKET", "LIMIT")
VALIDITIES = ("DAY", "IOC")
TAG = re.compile(r"[A-Za-z0-9]{1,20}")  # Kite's limit: 20 alphanumeric characters (docs/KITE.md)
APP_ID = 1234  # any number: the emulator has no app registry


def now() -> str:
    """Kite's timestamp format, in IST like the exchange."""
    return datetime.now(IST).strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class OrderRule:
    """What happens to orders that match every given matcher (none given: every order).

    ``reject``: the order is accepted, then REJECTED with this status message (as Kite's RMS does).
    ``slices``: fill quantities, one per matching pass (placement, modification, each price
    update); once used up, the rest fills whole. ``times``: how many orders the rule applies to.
    """

    instrument: str | None = None
    tag: str | None = None
    reject: str | None = None
    slices: tuple[int, ...] = ()
    times: int | None = None

    def matches(self, instrument: Instrument, tag: str | None) -> bool:
        return ((self.instrument is None or self.instrument == instrument.key)
                and (self.tag is None or self.tag == tag))


@dataclass
class Trade:
    """One fill; ``as_dict`` is Kite's trade shape."""

    trade_id: str
    order: Order
    quantity: int
    price: float
    at: str

    def as_dict(self) -> dict[str, Any]:
        o = self.order
        return {
            "trade_id": self.trade_id, "order_id": o.order_id, "exchange": o.exchange,
            "tradingsymbol": o.tradingsymbol, "instrument_token": o.instrument_token, "product": o.product,
            "average_price": self.price, "quantity": self.quantity, "exchange_order_id": o.exchange_order_id,
            "transaction_type": o.transaction_type, "fill_timestamp": self.at,
            "order_timestamp": o.order_timestamp[11:],  # Kite's trades carry only the time here
            "exchange_timestamp": self.at,
        }


@dataclass
class Order:
    """One order as the book holds it; ``as_dict`` is Kite's order shape, ``history`` its states."""

    order_id: str
    placed_by: str
    variety: str
    exchange: str
    tradingsymbol: str
    instrument_token: int
    transaction_type: str
    order_type: str
    product: str
    validity: str
    quantity: int
    price: float
    trigger_price: float
    disclosed_quantity: int
    tag: str | None
    order_timestamp: str
    status: str = "PUT ORDER REQ RECEIVED"
    status_message: str | None = None
    exchange_order_id: str | None = None
    exchange_timestamp: str | None = None
    exchange_update_timestamp: str | None = None
    filled_quantity: int = 0
    cancelled_quantity: int = 0
    average_price: float = 0.0
    modified: bool = False
    tags: list[str] = field(default_factory=list)
    guid: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    slices: list[int] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pending_quantity(self) -> int:
        # As Kite reports them: a rejected order has none pending, a cancelled one keeps what it had.
        return 0 if self.status == REJECTED else self.quantity - self.filled_quantity

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "placed_by": self.placed_by, "order_id": self.order_id, "exchange_order_id": self.exchange_order_id,
            "parent_order_id": None, "status": self.status, "status_message": self.status_message,
            "status_message_raw": self.status_message, "order_timestamp": self.order_timestamp,
            "exchange_update_timestamp": self.exchange_update_timestamp,
            "exchange_timestamp": self.exchange_timestamp, "variety": self.variety, "modified": self.modified,
            "exchange": self.exchange, "tradingsymbol": self.tradingsymbol,
            "instrument_token": self.instrument_token, "order_type": self.order_type,
            "transaction_type": self.transaction_type, "validity": self.validity, "product": self.product,
            "quantity": self.quantity, "disclosed_quantity": self.disclosed_quantity, "price": self.price,
            "trigger_price": self.trigger_price, "average_price": self.average_price,
            "filled_quantity": self.filled_quantity, "pending_quantity": self.pending_quantity,
            "cancelled_quantity": self.cancelled_quantity, "market_protection": 0, "meta": {}, "tag": self.tag,
            "guid": self.guid,
        }
        if self.tags:
            d["tags"] = list(self.tags)
        return d

    def as_update(self, status: str) -> dict[str, Any]:
        """The order-update payload (the postback's fields); its status may be UPDATE."""
        d = self.as_dict()
        del d["modified"]
        # Kite sends an empty checksum over the WebSocket (it is for HTTP postbacks).
        d.update(status=status, user_id=self.placed_by, unfilled_quantity=self.pending_quantity,
                 app_id=APP_ID, checksum="")
        return d


def _field(params: Mapping[str, str], name: str, kind: type, default: Any = None) -> Any:
    raw = params.get(name)
    if raw is None or raw == "":
        if default is None:
            raise input_error(f"Missing `{name}`.")
        return default
    try:
        return kind(raw)
    except ValueError:
        raise input_error(f"Invalid `{name}`: {raw!r}.") from None


def _choice(params: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str | None = None) -> str:
    value = params.get(name) or default
    if value is None:
        raise input_error(f"Missing `{name}`.")
    if value not in allowed:
        raise input_error(f"Invalid `{name}` {value!r}: the emulator supports {', '.join(allowed)}.")
    return value


def _on_tick(price: float, tick: float) -> bool:
    steps = price / tick
    return abs(steps - round(steps)) < 1e-6


def _round_to_tick(price: float, tick: float, up: bool) -> float:
    steps = price / tick
    steps = math.ceil(steps - 1e-9) if up else math.floor(steps + 1e-9)
    return round(steps * tick, 8)


class AccountBook:
    """Orders, trades and positions of the one user the emulator serves; thread-safe."""

    def __init__(self, instruments: Instruments, user_id: str, on_update: Callable[[dict[str, Any]], None],
                 auto_market_protection_pct: float = 2.0) -> None:
        self.instruments = instruments
        self.user_id = user_id
        self.on_update = on_update
        self.auto_market_protection_pct = auto_market_protection_pct
        self._lock = threading.RLock()
        self._prices: dict[int, float] = {}
        self._orders: dict[str, Order] = {}
        self._trades: list[Trade] = []
        self._rules: list[OrderRule] = []
        day = datetime.now(IST)
        # Kite's 15-digit ids: date + sequence. Seeded by the time of day so ids stay unique when a
        # test restarts the emulator in the same day.
        self._prefix = day.strftime("%y%m%d")
        self._seq = int(time.time() % 86_400) * 1_000

    # -- rules and prices -----------------------------------------------------------------------

    def add_rule(self, rule: OrderRule) -> OrderRule:
        if rule.instrument is not None and self.instruments.get(rule.instrument) is None:
            raise ValueError(f"unknown instrument {rule.instrument!r}")
        if any(q < 1 for q in rule.slices):
            raise ValueError("slices must be positive quantities")
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear_rules(self) -> None:
        with self._lock:
            self._rules.clear()

    def on_price(self, token: int, price: float) -> None:
        """A new price for ``token``: every open order on it gets a matching pass, oldest first."""
        with self._lock:
            self._prices[token] = price
            for order in list(self._orders.values()):
                if order.instrument_token == token:
                    self._match(order)

    # -- the API --------------------------------------------------------------------------------

    def place(self, variety: str, params: Mapping[str, str]) -> str:
        if variety != "regular":
            raise input_error(f"Invalid `variety` {variety!r}: the emulator supports regular orders only.")
        exchange = _field(params, "exchange", str)
        symbol = _field(params, "tradingsymbol", str)
        instrument = self.instruments.get(f"{exchange}:{symbol}")
        if instrument is None:
            raise input_error(f"Invalid `tradingsymbol`: {exchange}:{symbol} is not in the instruments list.")
        side = _choice(params, "transaction_type", TRANSACTION_TYPES)
        order_type = _choice(params, "order_type", ORDER_TYPES)
        product = _choice(params, "product", PRODUCTS)
        validity = _choice(params, "validity", VALIDITIES, "DAY")
        quantity = _field(params, "quantity", int)
        if quantity < 1 or quantity % instrument.lot_size:
            raise input_error(f"Invalid `quantity` {quantity}: must be a positive multiple of the lot size "
                              f"{instrument.lot_size}.")
        price = 0.0
        if order_type == "LIMIT":
            price = self._limit_price(params, instrument)
        protection = _field(params, "market_protection", float, 0.0)
        if protection != -1 and not 0 <= protection <= 100:
            raise input_error("Invalid `market_protection`: -1 (automatic) or a percentage from 0 to 100.")
        tag = params.get("tag") or None
        if tag is not None and not TAG.fullmatch(tag):
            raise input_error("Invalid `tag`: up to 20 alphanumeric characters.")
        trigger_price = _field(params, "trigger_price", float, 0.0)  # kept, unused: SL orders are not emulated
        disclosed_quantity = _field(params, "disclosed_quantity", int, 0)
        with self._lock:
            self._seq += 1
            order = Order(
                f"{self._prefix}{self._seq:09d}", self.user_id, variety, exchange, symbol, instrument.token, side,
                order_type, product, validity, quantity, price, trigger_price, disclosed_quantity, tag, now(),
            )
            if tag:
                order.tags.append(tag)
            self._orders[order.order_id] = order
            self._record(order, "PUT ORDER REQ RECEIVED")
            self._record(order, "VALIDATION PENDING")
            rule = self._take_rule(instrument, tag)
            market = self._prices.get(instrument.token)
            if rule is not None and rule.reject is not None:
                self._reject(order, rule.reject)
            elif order_type == "MARKET" and market is None:
                self._reject(order, f"The emulator has no price for {instrument.key}: set one first.")
            else:
                if rule is not None:
                    order.slices = list(rule.slices)
                if order_type == "MARKET" and protection:
                    self._protect(order, instrument, market or 0.0, protection)
                self._open(order)
                self._match(order)
                if validity == "IOC" and order.status == OPEN:
                    self._cancel(order)
            return order.order_id

    def modify(self, variety: str, order_id: str, params: Mapping[str, str]) -> str:
        with self._lock:
            order = self._open_order(variety, order_id, "modified")
            instrument = self.instruments.by_token(order.instrument_token)
            assert instrument is not None  # instruments are never removed
            quantity = _field(params, "quantity", int, order.quantity)
            if quantity <= order.filled_quantity or quantity % instrument.lot_size:
                raise input_error(f"Invalid `quantity` {quantity}: must exceed the filled "
                                  f"{order.filled_quantity} and be a multiple of the lot size {instrument.lot_size}.")
            order_type = _choice(params, "order_type", ORDER_TYPES, order.order_type)
            price = self._limit_price(params, instrument, order.price) if order_type == "LIMIT" else 0.0
            validity = _choice(params, "validity", VALIDITIES, order.validity)
            trigger_price = _field(params, "trigger_price", float, order.trigger_price)
            disclosed_quantity = _field(params, "disclosed_quantity", int, order.disclosed_quantity)
            self._record(order, "MODIFY VALIDATION PENDING")
            self._record(order, "MODIFY PENDING")
            order.quantity, order.order_type, order.price, order.validity = quantity, order_type, price, validity
            order.trigger_price, order.disclosed_quantity = trigger_price, disclosed_quantity
            order.modified = True
            order.exchange_update_timestamp = now()
            self._record(order, "MODIFIED")
            self._record(order, OPEN)
            self.on_update(order.as_update(UPDATE))
            self._match(order)
            return order.order_id

    def cancel(self, variety: str, order_id: str) -> str:
        with self._lock:
            order = self._open_order(variety, order_id, "cancelled")
            self._record(order, "CANCEL PENDING")
            self._cancel(order)
            return order.order_id

    def orders(self) -> list[dict[str, Any]]:
        with self._lock:
            return [o.as_dict() for o in self._orders.values()]

    def history(self, order_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(h) for h in self._order(order_id).history]

    def trades(self, order_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            if order_id is not None:
                self._order(order_id)
            return [t.as_dict() for t in self._trades if order_id is None or t.order.order_id == order_id]

    def positions(self) -> dict[str, list[dict[str, Any]]]:
        """Net and day positions from the fills. The emulator's day has no overnight positions, so
        the two lists are the same; the multiplier is 1 (quantities are in units)."""
        with self._lock:
            groups: dict[tuple[str, str, str], list[Trade]] = {}
            for t in self._trades:
                groups.setdefault((t.order.exchange, t.order.tradingsymbol, t.order.product), []).append(t)
            net = [self._position(trades) for trades in groups.values()]
        return {"net": net, "day": [dict(p) for p in net]}

    # -- internals (lock held) ------------------------------------------------------------------

    def _limit_price(self, params: Mapping[str, str], instrument: Instrument, default: float | None = None) -> float:
        price: float = _field(params, "price", float, default)
        if price <= 0 or not _on_tick(price, instrument.tick_size):
            raise input_error(f"Invalid `price` {price}: must be positive and a multiple of the tick size "
                              f"{instrument.tick_size}.")
        return price

    def _take_rule(self, instrument: Instrument, tag: str | None) -> OrderRule | None:
        for rule in self._rules:
            if rule.matches(instrument, tag):
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times <= 0:
                        self._rules.remove(rule)
                return rule
        return None

    def _protect(self, order: Order, instrument: Instrument, market: float, pct: float) -> None:
        """Kite books a MARKET order with market protection as a LIMIT at the protection price,
        tagged ``mktp`` and ``mktp:<pct>``; it never trades beyond it."""
        pct = self.auto_market_protection_pct if pct == -1 else pct
        if order.transaction_type == "BUY":
            order.price = _round_to_tick(market * (1 + pct / 100), instrument.tick_size, up=False)
        else:
            order.price = _round_to_tick(market * (1 - pct / 100), instrument.tick_size, up=True)
        order.order_type = "LIMIT"
        order.tags += ["mktp", f"mktp:{pct:.2f}"]

    def _open(self, order: Order) -> None:
        self._record(order, "OPEN PENDING")
        order.exchange_order_id = f"1{self._seq:015d}"
        order.exchange_timestamp = order.exchange_update_timestamp = now()
        self._record(order, OPEN)
        self.on_update(order.as_update(OPEN))

    def _reject(self, order: Order, message: str) -> None:
        order.status_message = message
        self._record(order, REJECTED)
        self.on_update(order.as_update(REJECTED))

    def _cancel(self, order: Order) -> None:
        order.cancelled_quantity = order.pending_quantity
        order.exchange_update_timestamp = now()
        self._record(order, CANCELLED)
        self.on_update(order.as_update(CANCELLED))

    def _match(self, order: Order) -> None:
        if order.status != OPEN:
            return
        price = self._prices.get(order.instrument_token)
        if price is None:
            return
        if order.order_type == "LIMIT" and (price > order.price if order.transaction_type == "BUY"
                                            else price < order.price):
            return
        quantity = order.pending_quantity
        if order.slices:
            quantity = min(order.slices.pop(0), quantity)
        self._fill(order, quantity, price)

    def _fill(self, order: Order, quantity: int, price: float) -> None:
        at = now()
        self._trades.append(Trade(f"{len(self._trades) + 10_000_001:08d}", order, quantity, price, at))
        value = order.average_price * order.filled_quantity + price * quantity
        order.filled_quantity += quantity
        order.average_price = round(value / order.filled_quantity, 8)
        order.exchange_update_timestamp = at
        if order.pending_quantity == 0:
            self._record(order, COMPLETE)
            self.on_update(order.as_update(COMPLETE))
        else:
            self._record(order, OPEN)
            self.on_update(order.as_update(UPDATE))

    def _record(self, order: Order, status: str) -> None:
        order.status = status
        order.history.append(order.as_dict())

    def _order(self, order_id: str) -> Order:
        order = self._orders.get(order_id)
        if order is None:
            raise input_error(f"Couldn't find that `order_id` ({order_id}).")
        return order

    def _open_order(self, variety: str, order_id: str, verb: str) -> Order:
        order = self._order(order_id)
        if variety != order.variety:
            raise input_error(f"Invalid `variety` {variety!r} for order {order_id} ({order.variety}).")
        if order.status != OPEN:
            raise input_error(f"Order cannot be {verb}: it is {order.status}.")
        return order

    def _position(self, trades: list[Trade]) -> dict[str, Any]:
        first = trades[0].order
        buys = [t for t in trades if t.order.transaction_type == "BUY"]
        sells = [t for t in trades if t.order.transaction_type == "SELL"]
        bq, sq = sum(t.quantity for t in buys), sum(t.quantity for t in sells)
        bv, sv = sum((t.quantity * t.price for t in buys), 0.0), sum((t.quantity * t.price for t in sells), 0.0)
        bp, sp = (bv / bq if bq else 0.0), (sv / sq if sq else 0.0)
        quantity = bq - sq
        last = self._prices.get(first.instrument_token, trades[-1].price)
        value = sv - bv
        pnl = value + quantity * last
        closed = min(bq, sq)
        realised = (sp - bp) * closed if closed else 0.0
        return {
            "tradingsymbol": first.tradingsymbol, "exchange": first.exchange,
            "instrument_token": first.instrument_token, "product": first.product, "quantity": quantity,
            "overnight_quantity": 0, "multiplier": 1,
            "average_price": bp if quantity > 0 else sp if quantity < 0 else 0.0, "close_price": 0,
            "last_price": last, "value": value, "pnl": pnl, "m2m": pnl, "unrealised": pnl - realised,
            "realised": realised, "buy_quantity": bq, "buy_price": bp, "buy_value": bv, "buy_m2m": bv,
            "sell_quantity": sq, "sell_price": sp, "sell_value": sv, "sell_m2m": sv, "day_buy_quantity": bq,
            "day_buy_price": bp, "day_buy_value": bv, "day_sell_quantity": sq, "day_sell_price": sp,
            "day_sell_value": sv,
        }
