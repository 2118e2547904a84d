"""What algo-execution rehearses between approvals (runtime/rehearsal.py): a shadow of it placing a made-up
order with the paper broker.

The shadow is a second ExecutionDaemon built from the same config and never set up: no lease, no Kite
(with a live broker the rehearsal still warms everything before the place call, and never calls Kite),
its own ledger and paper book writing to /dev/null without fdatasync, its bus silenced. Each rehearsal is
an approval of one share of a made-up instrument, decoded, checked, logged to the ledger, placed, and
answered; the order, its book entry, its exposure and its place in the rate budget are dropped after it.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ..runtime.calendar import IST
from ..runtime.envelope import RISK_APPROVED
from ..runtime.metrics import DaemonMetrics
from ..runtime.rehearsal import SYMBOL, deliver, made_up_signal, silence
from .day import Day
from .ledger import Ledger
from .margin import Exposure
from .paper import PaperBroker

if TYPE_CHECKING:
    from .main import ExecutionDaemon


def rehearsal(execution: ExecutionDaemon) -> Callable[[], None]:
    """One rehearsal a call, by a shadow of ``execution``."""
    shadow = type(execution)(execution.config, DaemonMetrics(execution.name))
    silence(shadow.bus)
    nowhere = Path(os.devnull)
    day = datetime.now(IST).date()
    paper = PaperBroker(nowhere, execution.section.model_copy(update={"fsync": False}), day)
    ledger = Ledger(nowhere, fsync=False, illegal=shadow.illegal)
    shadow.sender.day = Day(day, ledger, paper)
    governor = shadow.sender.governor
    count = itertools.count(1)

    def step() -> None:
        n = next(count)
        deliver(shadow.bus, RISK_APPROVED, made_up_signal(n, day, time.time_ns()), SYMBOL)
        ledger.orders.clear()
        ledger.exposure = Exposure()
        paper.orders.clear()
        paper.by_tag.clear()
        paper.working.clear()
        governor.sent.clear()
        governor.today = 0

    return step
