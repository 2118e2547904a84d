"""How a bus client reaches the broker: ``UnixTransport``, the only transport (``bus.transport =
"unix"``), behind a small interface (``Transport``) that ``BusClient`` alone uses."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from typing import cast

from . import wire
from .envelope import MARKET_DATA_MARKS

log = logging.getLogger("algo.bus")

# Receives one read's worth of PUBLISH frames: the bytes and each frame's offsets into them.
BatchHandler = Callable[[bytes, list[wire.Span]], None]

# A connection that lasted this long was healthy: reconnect at once when it ends.
_STABLE_SEC = 1.0
_MD = MARKET_DATA_MARKS  # the broker's lanes: what is not market data counts for acks
_WARN_EVERY_SEC = 10.0
# A turn's frames leave once this many bytes are queued, not only at the turn's end: the first ticks of a
# burst go while the rest is still being stamped (~40 ticks; a write per ~0.1 ms of stamping).
WRITE_AT_BYTES = 16384


class Transport(ABC):
    """Delivers frames to the broker and hands received PUBLISH frames to ``on_batch``."""

    def __init__(self) -> None:
        self.dropped = 0
        self.reconnects = 0
        self.connected = False
        self.on_batch: BatchHandler = lambda data, spans: None

    @abstractmethod
    async def start(self) -> None:
        """Begin connecting; never raises for an unreachable broker (it keeps retrying)."""

    @abstractmethod
    def send(self, frame: bytes, now: bool = False) -> bool:
        """Queue one encoded frame; False (and counted) when the outgoing buffer is full. ``now``: write it
        (with what is queued before it) at once instead of at the end of this loop turn, if it is the
        turn's first such frame; later ones leave with the rest of the turn, in one write."""

    @abstractmethod
    def flush(self) -> None:
        """Write what is queued now, not at the end of this loop turn."""

    @abstractmethod
    async def close(self) -> None:
        """Flush what can be flushed and disconnect for good."""

    @property
    @abstractmethod
    def queued_bytes(self) -> int:
        """Bytes waiting to reach the broker."""

    @abstractmethod
    def acknowledge(self) -> None:
        """What was received so far is durable (for a client whose HELLO asked for acks)."""


class UnixTransport(Transport, asyncio.Protocol):
    """Stream socket to the local broker with batched writes and automatic reconnect."""

    def __init__(
        self,
        path: str,
        hello: bytes,
        *,
        max_frame: int,
        buffer_bytes: int,
        reconnect_min: float,
        reconnect_max: float,
        resubscribe: Callable[[], list[bytes]],
        acks: bool = False,
    ) -> None:
        super().__init__()
        self.acks = acks  # count order-path frames for acknowledge() (the HELLO said so: wire.py)
        self._order_path = 0  # order-path frames received on this connection
        self._acked = 0
        self.path = path
        self.hello = hello
        self.buffer_bytes = buffer_bytes
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.resubscribe = resubscribe
        self.max_frame = max_frame
        self._buffer = wire.Buffer()
        self._tx: asyncio.Transport | None = None
        self._holding = False  # the broker said it is stopping: frames go to the outbox, not to it
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._backlog = 0
        self._outbox: deque[bytes] = deque()
        self._outbox_bytes = 0
        self._flush_handle: asyncio.Handle | None = None
        self._wrote_now = False  # an order-path frame was written at once this loop turn
        self._lost: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        first = asyncio.Event()
        self._task = asyncio.create_task(self._maintain(first), name="bus-connection")
        # Give the first attempt a moment so a daemon that starts with the bus up is connected
        # by the time it reports READY=1; an unreachable bus is retried in the background.
        try:
            await asyncio.wait_for(first.wait(), timeout=1.0)
        except TimeoutError:
            pass

    async def _maintain(self, first: asyncio.Event) -> None:
        """Connect, wait for the connection to end, reconnect. A connection that ended quickly
        (the broker refused us, or keeps crashing) backs off instead of hammering it."""
        assert self._loop is not None
        delay = self.reconnect_min
        failures = 0
        warned = -_WARN_EVERY_SEC
        while not self._closing:
            try:
                await self._loop.create_unix_connection(lambda: self, self.path)
            except OSError as exc:
                if failures == 0:
                    log.warning("bus unreachable at %s (%s); retrying", self.path, exc.strerror or exc)
                failures += 1
                first.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.reconnect_max)
                continue
            if failures:
                log.info("bus reachable again after %d attempts", failures)
            failures = 0
            first.set()
            since = self._loop.time()
            self._lost = self._loop.create_future()
            await self._lost
            if self._closing:
                break
            self.reconnects += 1
            now = self._loop.time()
            if now - warned >= _WARN_EVERY_SEC:  # a flapping connection warns once, not per attempt
                log.warning("bus connection lost; reconnecting")
                warned = now
            if now - since >= _STABLE_SEC:
                delay = self.reconnect_min
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.reconnect_max)

    def _hello_again(self) -> bytes:
        """The same HELLO, marked as a reconnect (wire.AGAIN): the broker then hands over what it missed."""
        (frame,) = wire.FrameReader(self.max_frame).feed(self.hello)
        return wire.encode(wire.HELLO, frame.topic, frame.body, wire.AGAIN)

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but they have its methods
        self._tx = tx = cast(asyncio.Transport, transport)
        self._holding = False
        self._backlog = 0
        self._buffer = wire.Buffer()
        self._order_path = self._acked = 0  # counts are per connection
        self.connected = True
        hello = self.hello if not self.reconnects or not self.hello else self._hello_again()
        tx.write(b"".join([hello, *self.resubscribe()]))
        while self._outbox:
            frame = self._outbox.popleft()
            self._pending.append(frame)
            self._pending_bytes += len(frame)
        self._outbox_bytes = 0
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._tx = None
        self.connected = False
        self._requeue_pending()
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        data = self._buffer.join(data)
        try:
            spans, consumed = wire.scan(data, self.max_frame)
        except wire.ProtocolError as exc:
            log.error("bad frame from the broker (%s); reconnecting", exc)
            if self._tx is not None:
                self._tx.abort()
            return
        self._buffer.keep(data, consumed)
        if any(span[0] != wire.PUBLISH for span in spans):
            for kind, start, _t1, k1, stop in spans:
                if kind == wire.NOTICE and data.startswith(wire.CLOSING, start + wire.HEADER_SIZE):
                    self._hold()
                elif kind == wire.NOTICE:
                    log.warning("broker notice: %s", data[k1:stop].decode(errors="replace"))
            spans = [span for span in spans if span[0] == wire.PUBLISH]
        if self.acks:
            self._order_path += sum(not data.startswith(_MD, start + wire.HEADER_SIZE) for _, start, _, _, _ in spans)
        self.on_batch(data, spans)

    def acknowledge(self) -> None:
        """Tell the broker every order-path frame handed to ``on_batch`` so far is durable here: it stops
        keeping them for a replay. Written at once, never queued: a count is about this connection only."""
        if self.acks and self._tx is not None and not self._holding and self._order_path != self._acked:
            self._tx.write(wire.ack(self._order_path))
            self._acked = self._order_path

    def _hold(self) -> None:
        """The broker is stopping: from now on frames wait in the outbox for the next broker (socket
        activation keeps the socket, so the reconnect finds it), none go into a socket nobody will read."""
        log.info("the bus broker is stopping: publishing waits for the next one")
        self._holding = True
        self._requeue_pending()

    def _requeue_pending(self) -> None:
        """Frames not yet handed to the kernel go back to the outbox, for the next connection."""
        for frame in self._pending:
            self._outbox.append(frame)
            self._outbox_bytes += len(frame)
        self._pending.clear()
        self._pending_bytes = 0

    # sending
    def send(self, frame: bytes, now: bool = False) -> bool:
        tx = self._tx
        if tx is None or self._holding:
            return self._keep(frame)
        # _backlog is the socket buffer as of the last flush: it only shrinks in between,
        # so the check stays conservative without a call per message; before dropping, look again
        # (the broker may have taken it all since: a burst must not be dropped on a stale figure).
        pending = self._pending_bytes + len(frame)
        if pending + self._backlog > self.buffer_bytes:
            self._backlog = tx.get_write_buffer_size()
            if pending + self._backlog > self.buffer_bytes:
                self.dropped += 1
                return False
        self._pending.append(frame)
        self._pending_bytes = pending
        if now and not self._wrote_now:
            self._wrote_now = True
            self._write()
        elif pending >= WRITE_AT_BYTES:
            self._write()
        if self._flush_handle is None:
            assert self._loop is not None
            self._flush_handle = self._loop.call_soon(self._end_turn)
        return True

    def _keep(self, frame: bytes) -> bool:
        """No broker to write to (connecting, or it is stopping): the frame waits in the outbox, if it fits."""
        if self._outbox_bytes + len(frame) > self.buffer_bytes:
            self.dropped += 1
            return False
        self._outbox.append(frame)
        self._outbox_bytes += len(frame)
        return True

    def _end_turn(self) -> None:
        """What this loop turn queued, in one write; the next turn's first order-path frame goes at once again.

        Only the first order-path frame of a turn is written as it is published: the rest of the turn (a
        flatten's other orders, a batch of approvals) joins the turn's one write instead of a syscall each,
        and the broker then reads, scans and routes them together."""
        self._flush_handle = None
        self._wrote_now = False
        self._write()

    def flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._end_turn()

    def _write(self) -> None:
        if self._tx is None or self._holding or not self._pending:
            return
        self._tx.write(b"".join(self._pending))
        self._pending.clear()
        self._pending_bytes = 0
        self._backlog = self._tx.get_write_buffer_size()

    @property
    def queued_bytes(self) -> int:
        tx = self._tx
        return self._pending_bytes + self._outbox_bytes + (tx.get_write_buffer_size() if tx else 0)

    async def close(self) -> None:
        self._closing = True
        self.flush()
        if self._tx is not None:
            self._tx.close()  # close() lets the buffered bytes drain first
            if self._lost is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(self._lost), 2.0)
                except TimeoutError:
                    log.warning("bus did not take our last %d bytes within 2s", self.queued_bytes)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
