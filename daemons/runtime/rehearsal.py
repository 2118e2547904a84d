"""Keeping the order path's code warm between events: a shadow of the daemon rehearses it.

On a shared virtual machine a process's caches are the host's to take: algo-risk's signal handler, ~20 µs
run back to back, takes ~200 µs when it last ran 100 ms before, whether the process slept or spun meanwhile
(bench/pipeline/cold.py; a C pointer chase loses the same 10x). At 1k ticks/s the order path's handlers run
that seldom. What goes cold is mostly code, the interpreter's way through the handler, not the daemon's
data: a second instance of the daemon run on a made-up event every few milliseconds keeps the real one's
next event at ~50-75 µs.

The shadow is built like the daemon and talks to no one: its bus client's transport is a ``NullTransport``
(what it publishes is dropped, nothing is read), it never runs ``setup`` (no state is read or written),
the daemon's logger is muted while it rehearses, and what it decides is thrown away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from . import wire
from .client import BusClient
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


async def rehearse(step: Callable[[], None], every: float, stopping: asyncio.Event, logger: logging.Logger) -> None:
    """``step()`` every ``every`` seconds until ``stopping`` is set, ``logger`` muted while it runs. A step
    that raises ends the rehearsal, logged once: the daemon itself is untouched, only its warmth is lost."""
    while True:
        await asyncio.sleep(every)  # a plain timer: waiting on ``stopping`` too would cost a task each time
        if stopping.is_set():
            return
        logger.disabled = True
        try:
            step()
        except Exception as exc:
            logger.disabled = False
            logger.warning("the order path's rehearsal stopped (the daemon is unaffected; its next events may be "
                           "slower to handle): %s: %s", type(exc).__name__, exc)
            return
        finally:
            logger.disabled = False
