"""What algo-risk rehearses between signals (runtime/rehearsal.py): a shadow of it deciding a made-up signal.

The shadow is a second RiskDaemon built from the same config, never set up (it holds no position, reads
and writes no checkpoint, has no portfolios' desk), its bus silenced. Its signals are an entry and an exit
in turn, a minute into a trading day's session, so every one takes the approved path, as most real ones do;
its rate limit never refuses (the fleet's is the real risk's), and the approvals it keeps for a resend are
dropped after each.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from ..runtime.calendar import IST, last_trading_day
from ..runtime.envelope import STRATEGY_SIGNAL
from ..runtime.metrics import DaemonMetrics
from ..runtime.rehearsal import SYMBOL, deliver, made_up_signal, silence
from .rules import RateLimiter

if TYPE_CHECKING:
    from .main import RiskDaemon


def rehearsal(risk: RiskDaemon) -> Callable[[], None]:
    """One rehearsal a call, by a shadow of ``risk``."""
    shadow = type(risk)(risk.config, DaemonMetrics(risk.name))
    silence(shadow.bus)
    shadow.rules.rate = RateLimiter(1e9)
    market = risk.config.market
    day = last_trading_day(datetime.now(IST).date(), market.holidays)
    opened = int(datetime.combine(day, market.open, IST).timestamp() + 60) * 1_000_000_000
    count = itertools.count(1)

    def step() -> None:
        n = next(count)
        deliver(shadow.bus, STRATEGY_SIGNAL, made_up_signal(n, day, opened + n), SYMBOL)
        shadow.recent.clear()

    return step
