"""Orders waiting for the order-rate governor: they leave in the order they came, each as soon
as the per-second and per-minute budgets (and any 429 hold) allow."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from .governor import Governor
from .orders import Order


class OrderQueue:
    def __init__(self, governor: Governor, send: Callable[[Order], None]) -> None:
        self.governor = governor
        self.send = send
        self.waiting: deque[Order] = deque()  # logged, waiting for the governor
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self.waiting)

    def submit(self, order: Order) -> bool:
        """Send now, or queue behind the governor (and those already waiting); True when queued."""
        if self.waiting or self.governor.wait(time.monotonic()) > 0:
            self.waiting.append(order)
            self._schedule()
            return True
        self.governor.take(time.monotonic())
        self.send(order)
        return False

    def take_all(self) -> list[Order]:
        """Every waiting order, no longer waiting (the day ended: they are not sent on the next day's budget)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        taken = list(self.waiting)
        self.waiting.clear()
        return taken

    def _schedule(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.governor.wait(time.monotonic()), self._release)

    def _release(self) -> None:
        self._timer = None
        while self.waiting and self.governor.wait(time.monotonic()) == 0:
            self.governor.take(time.monotonic())
            self.send(self.waiting.popleft())
        if self.waiting:
            self._schedule()
