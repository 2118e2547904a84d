"""Keeping the order path's code warm between events: a shadow of the daemon rehearses it.

On a shared virtual machine a process's caches are the host's to take: algo-risk's signal handler, ~20 µs
run back to back, takes ~200 µs when it last ran 100 ms before, whether the process slept or spun meanwhile
(bench/pipeline/cold.py; a C pointer chase loses the same 10x). At 1k ticks/s the order path's handlers run
that seldom. What goes cold is mostly code, the interpreter's way through the handler, not the daemon's
data: a second instance of the daemon run on a made-up event every few milliseconds keeps the real one's
next event at ~50-75 µs.

The shadow is built like the daemon and talks to no one: its bus client's transport is a ``NullTransport``
(what it publishes is dropped, nothing is read), it never runs ``setup`` (no state is read or written),
every logger is muted while it rehearses, and what it decides is thrown away (each daemon's
``rehearsal.py`` builds its shadow and says what it clears).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import date
from typing import Any

from . import wire
from .client import BusClient
from .instrument import InstrumentFacts
from .transport import Transport


class NullTransport(Transport):
    """A transport to nowhere: every frame is accepted and dropped, nothing ever arrives."""

    async def start(self) -> None:
        pass

    def send(self, frame: bytes, now: bool = False) -> bool:
        return True

    def flush(self) -> None:
        pass

    async def close(self) -> None:
        pass

    @property
    def queued_bytes(self) -> int:
        return 0

    def acknowledge(self) -> None:
        pass


def silence(client: BusClient) -> None:
    """The client's transport swapped for a NullTransport (a shadow's bus: it publishes into nothing)."""
    null = NullTransport()
    null.on_batch = client.transport.on_batch
    client.transport = null


def deliver(client: BusClient, topic: str, payload: dict[str, Any], key: str) -> None:
    """``payload`` stamped by the client's own factory and handed to its handlers as if the broker had sent
    it: the read's decode, its lanes and the handler, the whole path but the socket."""
    _, body = client.events.stamp(topic, payload, None, key)
    frame = wire.encode(wire.PUBLISH, topic.encode(), body, key.encode())
    client.transport.on_batch(frame, wire.scan(frame, len(frame))[0])


SYMBOL = "REHEARSAL"  # the made-up instrument of every rehearsal (no exchange lists one by that name)
FACTS = InstrumentFacts("EQ", "NSE", 1, 0.05, 0.0)  # its type, exchange, lot, tick size and strike


def made_up_signal(n: int, day: date, exchange_ns: int) -> dict[str, Any]:
    """The ``n``th rehearsal's signal (what risk approves as it is): an entry and an exit in turn, one share
    of ``SYMBOL`` at 100, its tick stamped ``exchange_ns`` and now."""
    side = "BUY" if n % 2 else "SELL"
    return {"engine": "rehearsal", "strategy": "rehearsal", "symbol": SYMBOL, "side": side, "quantity": 1,
            "order_type": "MARKET", "limit_price": None, "reason": "rehearsal", "entry": side == "BUY", "model": None,
            "tick_price": 100.0, "tick_exchange_ts": exchange_ns, "tick_ts": time.time_ns(),
            "signal_id": f"rehearsal:{day}:{n}", **FACTS.order_fields()}


async def rehearse(step: Callable[[], None], every: float, stopping: asyncio.Event, logger: logging.Logger) -> None:
    """``step()`` every ``every`` seconds until ``stopping`` is set, every logger muted while it runs (a
    shadow's lines would read as the daemon's). A step that raises ends the rehearsal, logged once on
    ``logger``: the daemon itself is untouched, only its warmth is lost."""
    while True:
        await asyncio.sleep(every)  # a plain timer: waiting on ``stopping`` too would cost a task each time
        if stopping.is_set():
            return
        muted = logging.root.manager.disable
        logging.disable(logging.CRITICAL)
        try:
            step()
        except Exception as exc:
            logging.disable(muted)
            logger.warning("the order path's rehearsal stopped (the daemon is unaffected; its next events may be "
                           "slower to handle): %s: %s", type(exc).__name__, exc)
            return
        finally:
            logging.disable(muted)
