"""Kite behind algo-execution: the client (``kite_broker.py``), the order updates of a ticker connection of
our own (``kite_postbacks.py``), the order-book poll, the token halt, and the place calls in flight.

What an answer means for an order (logged, refused, placed) stays with the execution's wiring
(``main.py``), which the paper broker shares; this module turns Kite's failures into that vocabulary:
a refused access token halts every new order of this process until a login restarts the unit, a margin
that cannot be read refuses the order, and a place call whose outcome is unknown is left to the order's
tag (the next poll or the restart's reconciliation settles it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine

from prometheus_client import CollectorRegistry

from ..runtime.config import ConfigError, FleetConfig, Problem, missing_credentials, resolve_path
from .broker_types import BrokerOrder
from .kite_broker import BrokerError, KiteBroker, OrderUpdate, TokenExpired
from .kite_orders import KiteBook
from .kite_postbacks import OrderUpdates
from .margin import kite_refusal
from .metrics import KiteCollector
from .orders import Order
from .outcomes import fields
from .refusals import TOKEN_HALT

log = logging.getLogger("algo.execution")


class KiteDesk:
    """One execution's dealings with Kite for the process's lifetime (a login restarts the unit)."""

    def __init__(self, kite: KiteBroker, updates: OrderUpdates) -> None:
        self.client = kite
        self.updates = updates
        self.halted = ""  # why no order may be sent (Kite refused the token)
        self.trouble = ""  # the last poll's failure, logged once
        self.sends: set[asyncio.Task[None]] = set()  # place calls in flight

    @classmethod
    async def open(cls, config: FleetConfig, on_update: Callable[[OrderUpdate], None],
                   on_rate_limited: Callable[[float], None], registry: CollectorRegistry) -> KiteDesk:
        """The client started on the running loop; its updates start later (``start_updates``), once the day's
        orders are reconciled."""
        if missing := missing_credentials(config, "api_key", "access_token"):
            raise ConfigError(str(resolve_path(None)), missing)
        kite = KiteBroker.from_config(config.kite, config.daemons.execution, on_update, on_rate_limited)
        await kite.start()
        registry.register(KiteCollector(kite))
        return cls(kite, OrderUpdates(config.kite, kite.on_order_update))

    def start_updates(self) -> None:
        self.updates.start()

    async def book(self) -> KiteBook:
        """The day's orders at Kite, for reconciliation. A token Kite refuses stops the start: nothing can be
        reconciled, so nothing may be sent (exit 78, no restart loop)."""
        try:
            return await self.client.book()
        except TokenExpired as exc:
            raise ConfigError(str(resolve_path(None)), [Problem("kite.access_token", str(exc))]) from None

    async def poll(self) -> None:
        """Kite's order book, for what the order updates missed; trouble is logged when it starts and ends."""
        if self.halted:
            return
        try:
            await self.client.poll()
        except TokenExpired as exc:
            self.halt(str(exc))
            return
        except BrokerError as exc:
            if str(exc) != self.trouble:
                log.error("order-book poll failed: %s; orders are still tracked by their updates", exc)
            self.trouble = str(exc)
            return
        if self.trouble:
            log.info("order-book poll works again")
            self.trouble = ""

    def halt(self, why: str) -> None:
        """Kite refused the token: nothing more is sent today by this process (the unit restarts after a login)."""
        if not self.halted:
            self.halted = why
            log.critical("%s (%s)", TOKEN_HALT, why)

    async def margin_refusal(self, order: Order, units: int) -> str:
        """Why Kite's margins refuse ``units`` more of the order ('' if they allow it): TOKEN_HALT when Kite
        refused the token (this process is then halted); a margin that cannot be read refuses the order too, as
        Kite would have the last word only after the send."""
        try:
            required, available = await self.client.margin(order.symbol, order.side, units, order.order_type,
                                                         order.limit_price, exchange=order.exchange)
        except TokenExpired as exc:
            self.halt(str(exc))
            return TOKEN_HALT
        except BrokerError as exc:
            return f"margin: Kite's margins could not be read ({exc}); not sent"
        return kite_refusal(order, units, required, available) or ""

    async def place(self, order: Order) -> BrokerOrder | None:
        """Kite's answer to the place call, or None when its outcome is unknown (logged; its tag settles it)."""
        try:
            return await self.client.place(order.client_id, order.symbol, order.side, order.quantity,
                                         order.order_type, order.limit_price, exchange=order.exchange)
        except TokenExpired as exc:  # maybe at Kite (a retry's lookup was refused): the restart's reconciliation says
            self.halt(str(exc))
            log.error("order %s: not known to be placed (%s); the reconciliation after the login settles it",
                      order.client_id, exc, extra=fields(order))
        except BrokerError as exc:
            log.error("order %s: %s; its tag settles it at the next poll", order.client_id, exc,
                      extra=fields(order))
        return None

    def send(self, course: Coroutine[None, None, None], client_id: str) -> None:
        """A place call's whole course, off the caller's turn; drained at stop."""
        task = asyncio.get_running_loop().create_task(course, name=f"place {client_id}")
        self.sends.add(task)
        task.add_done_callback(self.sends.discard)

    async def close(self, timeout: float) -> None:
        """Sends in flight finish first (their answers belong in the log), then the connections close."""
        if self.sends:
            await asyncio.wait(self.sends, timeout=timeout)
        if self.updates.started:
            self.updates.stop()
        await self.client.close()
