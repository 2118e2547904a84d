"""The live broker: Kite Connect's order API for algo-execution, without blocking its event loop.

``kiteconnect.KiteConnect`` is blocking HTTP, so every call runs on a small thread pool of its own
(not the loop's default executor, which others share and a hung request could starve), and each
pool thread has its own client, since a ``requests.Session`` is not meant to be shared by threads.

The API (the shape the paper broker can present too)::

    broker = KiteBroker.from_config(config.kite, config.daemons.execution, on_update)
    await broker.start()                              # on the loop that will receive updates
    placed = await broker.place(tag, "NSE:INFY", "BUY", 10, "MARKET")   # BrokerOrder, OPEN or REJECTED
    book = await broker.book()                        # KiteBook: by_tag, orders, trades; find(tag), trades_of(id)
    await broker.poll()                               # book(), and every change in it through on_update
    await broker.modify(order_id, quantity=20, price=1501.5)
    await broker.cancel(order_id)
    ticker.on_order_update = lambda ws, data: broker.on_order_update(data)   # KiteTicker's reactor thread
    broker.token_expiry_seconds()                     # algo_broker_token_expiry_seconds
    broker.stats                                      # rate_limited, ambiguous, adopted, resent
    # on_rate_limited(delay): each 429, so the order-rate governor can hold back for as long
    await broker.close()

``on_update(OrderUpdate)`` is called on the event loop, in order, for every change of an order's
(status, filled quantity) and for fills not reported before, whether the news came from the ticker
or from ``poll()``: both go through one normalization (``kite_orders``) and one deduplication, and
an older snapshot never overrides a newer one. ``OrderUpdate.trades`` are the new fills with
Kite's trade ids (fetched from ``/orders/{id}/trades`` when an update shows a fill), so fill ids
stay the same whichever path reported them. The handler must still be idempotent by fill id and
final status: a new adapter (a restart) reports the day's orders again.

Retries, only where they cannot place an order twice:

- 429 (``NetworkException`` with code 429): Kite did not take the request; back off and send it
  again, for every call.
- A network error or timeout, or Kite's 5xx ``NetworkException``/``DataException``/
  ``GeneralException``, during ``place``: the order may or may not be at Kite. The tag is looked up
  in the order book first (after a backoff, so an order in flight can land); found: adopted, not
  placed again; absent: placed again. Reads and ``modify`` (absolute values) are simply repeated;
  an unclear ``cancel`` is checked against the order's history before it is sent again.
- ``InputException``/``OrderException``/``PermissionException``: Kite refused. ``place`` returns a
  REJECTED ``BrokerOrder`` with Kite's message (as the paper broker does); cancel/modify raise
  ``Refused``. An order Kite accepts and its RMS rejects later arrives as a REJECTED update.
- ``TokenException``: ``TokenExpired``, never retried; ``token_expiry_seconds()`` drops to <= 0.
- Retries stop after ``retry_sec``: ``BrokerUnavailable``. For ``place`` its outcome is unknown;
  the order's tag answers it at the next ``poll()`` or reconciliation.

Kite does not deduplicate tags, so one race remains: an order still inside Kite when the lookup
finds nothing is placed a second time. ``KiteBook`` logs two orders with one tag at err.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as clock
from typing import Any, TypeVar

import requests
from kiteconnect import KiteConnect
from kiteconnect.exceptions import (
    InputException,
    KiteException,
    NetworkException,
    OrderException,
    PermissionException,
    TokenException,
)

from ..runtime.calendar import IST
from ..runtime.config import ExecutionSection, KiteSection
from .broker_types import FINAL, REJECTED, BrokerOrder, Trade
from .kite_orders import KiteBook, order_from_kite, split_symbol, status_of, trade_from_kite

__all__ = ["BrokerError", "BrokerUnavailable", "KiteBroker", "OrderUpdate", "Refused", "TokenExpired",
           "token_expiry"]

log = logging.getLogger("algo.execution")

T = TypeVar("T")
VARIETY = "regular"
REFUSALS = (InputException, OrderException, PermissionException)
EXPIRY = clock(6, 0)  # Kite ends every access token at about 06:00 IST


class BrokerError(Exception):
    """Base of what the adapter raises; messages never carry a credential."""


class TokenExpired(BrokerError):
    """Kite refused the access token (the daily expiry, or revoked): halt entries until a new login."""


class Refused(BrokerError):
    """Kite refused a cancel or modify (the order is no longer open, a bad value): Kite's message."""


class BrokerUnavailable(BrokerError):
    """Kite could not be reached (or kept answering 429) for ``retry_sec``; for a place, the
    order may or may not be at Kite: its tag says so at the next poll."""


@dataclass(frozen=True)
class OrderUpdate:
    """An order's new state and the fills not reported before (oldest first)."""

    order: BrokerOrder
    trades: tuple[Trade, ...] = ()


def token_expiry(at: float) -> float:
    """Epoch seconds of the first 06:00 IST after ``at``: a token set then is dead by that time."""
    now = datetime.fromtimestamp(at, IST)
    expiry = datetime.combine(now.date(), EXPIRY, IST)
    if expiry <= now:
        expiry += timedelta(days=1)
    return expiry.timestamp()


def _rate_limited(exc: BaseException) -> bool:
    return isinstance(exc, NetworkException) and exc.code == 429


def _number(value: float) -> float | int:
    """-1, not -1.0: the form Kite documents for market protection."""
    return int(value) if float(value).is_integer() else value


def _describe(exc: BaseException) -> str:
    """The class and, for Kite's errors, its message; a requests error's text can carry the URL
    and request, so only its class is told."""
    if isinstance(exc, KiteException):
        return f"{type(exc).__name__} (HTTP {exc.code}): {exc}"
    return type(exc).__name__


class _Backoff:
    """Exponential waits between attempts, within one deadline for the whole operation."""

    def __init__(self, first: float, most: float, seconds: float) -> None:
        self.delay, self.most = first, most
        self.deadline = time.monotonic() + seconds

    async def wait(self, what: str, why: str) -> None:
        if time.monotonic() + self.delay > self.deadline:
            raise BrokerUnavailable(f"{what}: {why}; gave up retrying")
        log.warning("%s: %s; retrying in %.2fs", what, why, self.delay)
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, self.most)


class KiteBroker:
    """Orders at Kite for one access token. Build a new one for a new token (after ``algoctl login``)."""

    def __init__(self, connect: Callable[[], KiteConnect], on_update: Callable[[OrderUpdate], None], *,
                 product: str, market_protection: float, retry_sec: float = 10.0, backoff_sec: float = 0.25,
                 max_backoff_sec: float = 2.0, threads: int = 4,
                 on_rate_limited: Callable[[float], None] | None = None) -> None:
        self._connect = connect
        self._on_update = on_update
        self._on_rate_limited = on_rate_limited  # called on the loop with the backoff about to be waited
        self.product = product
        self.market_protection = market_protection
        self.retry_sec, self.backoff_sec, self.max_backoff_sec = retry_sec, backoff_sec, max_backoff_sec
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="kite")
        self._local = threading.local()
        self._expires_at = token_expiry(time.time())
        self.stats: Counter[str] = Counter()  # plain integers for a collector to read at scrape time
        self._last: dict[str, BrokerOrder] = {}  # order id -> the state last reported
        self._reported: set[str] = set()  # trade ids reported
        self._filled_reported: Counter[str] = Counter()  # order id -> quantity of the trades reported
        self._lock = asyncio.Lock()  # one report at a time: the ticker's and poll()'s stay in order
        self._queue: asyncio.Queue[BrokerOrder] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pump: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, kite: KiteSection, execution: ExecutionSection, on_update: Callable[[OrderUpdate], None],
                    on_rate_limited: Callable[[float], None] | None = None) -> KiteBroker:
        """From the fleet config; the credentials come from systemd (``kite_api_key``, ``kite_access_token``)."""
        if kite.api_key is None or kite.access_token is None:
            raise TokenExpired("no Kite access token: run `algoctl login`")
        api_key, token = kite.api_key.get_secret_value(), kite.access_token.get_secret_value()

        def connect() -> KiteConnect:
            return KiteConnect(api_key, token, root=kite.root, timeout=kite.timeout_sec)

        return cls(connect, on_update, product=execution.product, market_protection=execution.market_protection,
                   retry_sec=execution.max_order_age_sec, on_rate_limited=on_rate_limited)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind to the running loop: order updates from the ticker's thread are handed to it."""
        self._loop = asyncio.get_running_loop()
        self._pump = asyncio.create_task(self._pump_updates(), name="kite-order-updates")

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            try:
                await self._pump
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=False, cancel_futures=True)

    def token_expiry_seconds(self) -> float:
        """Seconds until the access token dies (the next 06:00 IST after it was set); <= 0 once
        Kite has refused it."""
        return self._expires_at - time.time()

    # -- orders ---------------------------------------------------------------------------------

    async def place(self, tag: str, symbol: str, side: str, quantity: int, order_type: str,
                    price: float | None = None, *, exchange: str | None = None) -> BrokerOrder:
        """Place a regular-variety order tagged with our client id: OPEN with Kite's order id,
        REJECTED with Kite's message, or adopted (found by tag after an unclear failure)."""
        exch, tradingsymbol = split_symbol(symbol, exchange)
        market = order_type == "MARKET"
        params: dict[str, Any] = dict(
            variety=VARIETY, exchange=exch, tradingsymbol=tradingsymbol, transaction_type=side, quantity=quantity,
            product=self.product, order_type=order_type, price=None if market else price, validity="DAY", tag=tag,
            market_protection=_number(self.market_protection) if market else None,
        )
        placed = BrokerOrder("", tag, f"{exch}:{tradingsymbol}", side, quantity, order_type,
                             None if market else price, time.time_ns())
        what = f"place {tag}"
        backoff = self._backoff()
        while True:
            try:
                placed.order_id = str(await self._call(what, lambda k: k.place_order(**params), backoff,
                                                       repeatable=False))
                return placed
            except REFUSALS as exc:
                placed.status, placed.reason = REJECTED, str(exc)
                return placed
            except (requests.RequestException, KiteException) as exc:
                self.stats["ambiguous"] += 1
                await backoff.wait(what, f"{_describe(exc)}: the order may have reached Kite; looking its tag up")
                found = await self.find(tag, backoff)
                if found is not None:
                    self.stats["adopted"] += 1
                    log.warning("%s: Kite has it as order %s (%s); adopted, not placed again", what,
                                found.order_id, found.status, extra={"ORDER_ID": tag})
                    return found
                self.stats["resent"] += 1
                log.warning("%s: Kite has no order tagged %s; placing it again", what, tag, extra={"ORDER_ID": tag})

    async def margin(self, symbol: str, side: str, quantity: int, order_type: str, price: float | None = None, *,
                     exchange: str | None = None) -> tuple[float, float]:
        """(margin the order needs, margin available): Kite's order-margins API (``POST /margins/orders``,
        which counts the account's positions and open orders) and the equity segment's ``net``
        (``GET /user/margins/equity``: Kite's one margin account for equity and F&O)."""
        exch, tradingsymbol = split_symbol(symbol, exchange)
        params = [{"exchange": exch, "tradingsymbol": tradingsymbol, "transaction_type": side, "variety": VARIETY,
                   "product": self.product, "order_type": order_type, "quantity": quantity,
                   "price": price or 0, "trigger_price": 0}]
        needed = await self._call(f"margin of {quantity} {tradingsymbol}", lambda k: k.order_margins(params))
        account = await self._call("available margin", lambda k: k.margins("equity"))
        return float(sum(m["total"] for m in needed)), float(account["net"])

    async def find(self, tag: str, backoff: _Backoff | None = None) -> BrokerOrder | None:
        """Our order with this tag in today's order book, if Kite has it."""
        orders = await self._call(f"look up {tag}", lambda k: k.orders(), backoff)
        return KiteBook.from_kite(orders, ()).find(tag)

    async def book(self) -> KiteBook:
        """The day's tagged orders and their trades (orders first: a trade never lacks its order)."""
        orders = await self._call("order book", lambda k: k.orders())
        trades = await self._call("trade book", lambda k: k.trades())
        return KiteBook.from_kite(orders, trades)

    async def poll(self) -> KiteBook:
        """``book()``, reporting through ``on_update`` what the ticker did not (a missed update, a
        late trade); returns once reported."""
        book = await self.book()
        async with self._lock:
            for order in book.by_tag.values():
                await self._report(order, book.trades_of(order.order_id))
        return book

    async def cancel(self, order_id: str) -> None:
        """Cancel a working order; ``Refused`` when Kite says it cannot (no longer open)."""
        what = f"cancel {order_id}"
        backoff = self._backoff()
        while True:
            try:
                await self._call(what, lambda k: k.cancel_order(VARIETY, order_id), backoff, repeatable=False)
                return
            except REFUSALS as exc:
                raise Refused(f"{what}: {exc}") from None
            except (requests.RequestException, KiteException) as exc:
                await backoff.wait(what, f"{_describe(exc)}: the cancel may have reached Kite; checking the order")
                history = await self._call(what, lambda k: k.order_history(order_id), backoff)
                if history and status_of(history[-1].get("status")) in FINAL:
                    return

    async def modify(self, order_id: str, quantity: int | None = None, price: float | None = None) -> None:
        """Change a working order's quantity and/or limit price (absolute values, so a retry is harmless)."""
        what = f"modify {order_id}"
        try:
            await self._call(what, lambda k: k.modify_order(VARIETY, order_id, quantity=quantity, price=price))
        except REFUSALS as exc:
            raise Refused(f"{what}: {exc}") from None

    # -- order updates --------------------------------------------------------------------------

    def on_order_update(self, data: dict[str, Any]) -> None:
        """For ``KiteTicker.on_order_update`` (the reactor thread): hand the update to the loop."""
        if self._loop is None:
            raise RuntimeError("KiteBroker.start() was not called")
        try:
            self._loop.call_soon_threadsafe(self._offer, data)
        except RuntimeError:  # the loop is closed (stopping): the next start's reconciliation has it
            pass

    def _offer(self, data: dict[str, Any]) -> None:
        try:
            order = order_from_kite(data)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("an order update Kite sent could not be read (%s: %s); the next poll has the order",
                        type(exc).__name__, exc)
            return
        if order is not None:
            self._queue.put_nowait(order)

    async def _pump_updates(self) -> None:
        while True:
            order = await self._queue.get()
            async with self._lock:
                try:
                    await self._report(order, None)
                except Exception:  # one bad update must not end the reporting of every later one
                    log.exception("order update for %s not reported; the next poll has it", order.order_id,
                                  extra={"ORDER_ID": order.tag})

    async def _report(self, order: BrokerOrder, trades: list[Trade] | None) -> None:
        """Report ``order`` if it is news; ``trades`` None: fetch its fills if it shows more filled
        than reported. Called with ``_lock`` held."""
        last = self._last.get(order.order_id)
        if last is not None and (last.status in FINAL, last.filled) > (order.status in FINAL, order.filled):
            order = last  # an older snapshot (a poll that started before the last update): keep the news
        if trades is None:
            trades = await self._trades_of(order) if order.filled > self._filled_reported[order.order_id] else []
        new = tuple(t for t in trades if t.trade_id not in self._reported)
        if last is not None and (last.status, last.filled) == (order.status, order.filled) and not new:
            return
        self._on_update(OrderUpdate(order, new))  # first: if the handler fails, the next poll reports it again
        self._last[order.order_id] = order
        for trade in new:
            self._reported.add(trade.trade_id)
            self._filled_reported[order.order_id] += trade.quantity

    async def _trades_of(self, order: BrokerOrder) -> list[Trade]:
        try:
            trades = await self._call(f"trades of {order.order_id}", lambda k: k.order_trades(order.order_id))
        except (BrokerError, KiteException) as exc:  # the next poll() reports them
            log.warning("fills of order %s not fetched: %s", order.order_id, exc, extra={"ORDER_ID": order.tag})
            return []
        return [trade_from_kite(t, order.tag) for t in trades]

    # -- calls ----------------------------------------------------------------------------------

    def _backoff(self) -> _Backoff:
        return _Backoff(self.backoff_sec, self.max_backoff_sec, self.retry_sec)

    async def _call(self, what: str, fn: Callable[[KiteConnect], T], backoff: _Backoff | None = None, *,
                    repeatable: bool = True) -> T:
        """Run ``fn(client)`` in the pool. 429s are retried; network errors and Kite's 5xx too when
        the call is ``repeatable`` (else they go to the caller, who knows how to check)."""
        backoff = backoff or self._backoff()
        while True:
            try:
                return await asyncio.get_running_loop().run_in_executor(self._pool, self._in_thread, fn)
            except TokenException as exc:
                self._expires_at = min(self._expires_at, time.time())
                raise TokenExpired(f"{what}: Kite refused the access token ({exc}): run `algoctl login`") from None
            except REFUSALS:
                raise
            except (requests.RequestException, KiteException) as exc:
                if _rate_limited(exc):
                    self.stats["rate_limited"] += 1
                    if self._on_rate_limited is not None:
                        self._on_rate_limited(backoff.delay)
                elif not repeatable:
                    raise
                await backoff.wait(what, _describe(exc))

    def _in_thread(self, fn: Callable[[KiteConnect], T]) -> T:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._connect()
        return fn(client)
