"""A daemon's heap as setup left it is out of the cyclic GC's reach once it is ready (runtime/daemon.py,
settle_heap): a collection in the middle of an order-path handler walks only what was made since."""

from __future__ import annotations

import asyncio
import gc

from daemons.runtime.config import FleetConfig
from daemons.runtime.daemon import Daemon, Runner
from daemons.runtime.metrics import DaemonMetrics
from daemons.runtime.notify import Notifier


class Idle(Daemon):
    name = "heartbeat"
    uses_bus = False

    async def setup(self) -> None:
        self.built = [{"instrument": n} for n in range(1000)]  # state restored at setup: lives as long as the process

    async def run(self) -> None:
        self.frozen = gc.get_freeze_count()
        self.walked = sum(1 for o in gc.get_objects() if o is self.built)
        self.stopping.set()

    def status(self) -> str:
        return "idle"


def test_what_setup_built_is_frozen_before_ready_and_what_comes_after_is_not() -> None:
    gc.unfreeze()
    daemon = Idle(FleetConfig(), DaemonMetrics("heartbeat"))
    try:
        assert asyncio.run(Runner(daemon, Notifier(), "fleet.toml").main()) == 0
        assert daemon.frozen > 1000, "setup's objects are in the permanent generation"
        assert daemon.walked == 0, "no collection walks the state setup built"
        made_later: list[object] = []
        assert any(o is made_later for o in gc.get_objects()), "what the daemon makes while running is collected"
    finally:
        gc.unfreeze()
