"""One strategy's exception stays its own: the engine catches what every call into a strategy raises
and hands it here, to be counted for that strategy and logged (one ``err`` line with ``STRATEGY=``),
and goes on with the next strategy.

A strategy that keeps failing (``strategy_error_limit`` errors within ``strategy_error_window_sec``)
is disabled for entries: it still sees ticks and fills, so its exits still go out, as with
``algoctl pause``. It stays disabled (across restarts: the engine checkpoints it) until
``algoctl resume`` names it or its engine.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from enum import Enum

from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger("algo.engine")


class Mode(Enum):
    ENABLED = "enabled"
    DISABLED = "disabled"  # entries blocked, exits still go out


class Cause(Enum):
    ERROR = "error"  # a call raised, below the limit
    LIMIT = "limit"  # a call raised and the window now holds strategy_error_limit errors
    UNRESTORABLE = "unrestorable"  # its checkpointed state could not be restored at start
    UNUSABLE = "unusable"  # what its config names could not be loaded (a model file): open() raised
    RESUME = "resume"  # `algoctl resume` named the strategy or its engine


TRANSITIONS: dict[tuple[Mode, Cause], Mode] = {
    (Mode.ENABLED, Cause.ERROR): Mode.ENABLED,
    (Mode.ENABLED, Cause.LIMIT): Mode.DISABLED,
    (Mode.ENABLED, Cause.UNRESTORABLE): Mode.DISABLED,
    (Mode.ENABLED, Cause.UNUSABLE): Mode.DISABLED,
    (Mode.ENABLED, Cause.RESUME): Mode.ENABLED,
    (Mode.DISABLED, Cause.ERROR): Mode.DISABLED,
    (Mode.DISABLED, Cause.LIMIT): Mode.DISABLED,
    (Mode.DISABLED, Cause.UNRESTORABLE): Mode.DISABLED,
    (Mode.DISABLED, Cause.UNUSABLE): Mode.DISABLED,
    (Mode.DISABLED, Cause.RESUME): Mode.ENABLED,
}


class StrategyGuard:
    """Error accounting and the disabled set of one engine's strategies."""

    def __init__(self, engine: str, registry: CollectorRegistry, on_change: Callable[[], None]) -> None:
        self.engine = engine
        self.limit, self.window = 1, 0.0  # configure() sets them from the engine section
        self.on_change = on_change  # the engine checkpoints the disabled set
        self.disabled: set[str] = set()
        self.recent: dict[str, deque[float]] = {}  # monotonic times of each strategy's errors in the window
        self._quiet_until: dict[str, float] = {}  # a disabled strategy's next error line, at most one per window
        self.errors = Counter("algo_engine_strategy_errors", "Calls into a strategy that raised", ["strategy"],
                              registry=registry)
        self.disabled_gauge = Gauge("algo_engine_strategy_disabled", "1 while a strategy is disabled for entries "
                                    "after repeated errors", ["strategy"], registry=registry)

    def configure(self, limit: int, window: float, strategies: Iterable[str]) -> None:
        """The engine section's limits and its strategies (a strategy removed from the config is forgotten)."""
        self.limit, self.window = limit, window
        names = set(strategies)
        for name in self.disabled - names:
            self.disabled.discard(name)
            self.disabled_gauge.remove(name)
        for name in names:
            self.errors.labels(name)
            self.disabled_gauge.labels(name).set(int(name in self.disabled))

    def restore(self, disabled: Iterable[str]) -> None:
        for name in disabled:
            self.disabled.add(name)
            self.disabled_gauge.labels(name).set(1)

    def disable(self, strategy: str, why: str, cause: Cause = Cause.UNRESTORABLE) -> None:
        if self._move(strategy, cause):
            log.error("%s DISABLED for entries: %s (exits still go out); `algoctl resume %s` once checked",
                      strategy, why, strategy, extra={"ENGINE": self.engine, "STRATEGY": strategy})

    def resume(self, strategy: str) -> None:
        self.recent.pop(strategy, None)
        self._move(strategy, Cause.RESUME)

    def failed(self, strategy: str, call: str, exc: Exception, trace: str | None = None) -> None:
        """``call`` of ``strategy`` raised ``exc``: count, log, and disable it once over the limit."""
        now = time.monotonic()
        self.errors.labels(strategy).inc()
        recent = self.recent.setdefault(strategy, deque())
        recent.append(now)
        while recent and recent[0] <= now - self.window:
            recent.popleft()
        fields = {"ENGINE": self.engine, "STRATEGY": strategy, "TRACE_ID": trace}
        if strategy not in self.disabled or now >= self._quiet_until.get(strategy, 0.0):
            self._quiet_until[strategy] = now + self.window if strategy in self.disabled else 0.0
            log.error("%s raised in %s: %s", strategy, call, _one_line(exc), extra=fields)
        if self._move(strategy, Cause.LIMIT if len(recent) >= self.limit else Cause.ERROR):
            self._quiet_until[strategy] = now + self.window
            log.error("%s DISABLED for entries after %d errors within %gs (exits still go out); fix it, then "
                      "`algoctl resume %s`", strategy, len(recent), self.window, strategy, extra=fields)

    def _move(self, strategy: str, cause: Cause) -> bool:
        before = Mode.DISABLED if strategy in self.disabled else Mode.ENABLED
        after = TRANSITIONS[(before, cause)]
        if after is before:
            return False
        (self.disabled.add if after is Mode.DISABLED else self.disabled.discard)(strategy)
        self.disabled_gauge.labels(strategy).set(int(after is Mode.DISABLED))
        if after is Mode.ENABLED:
            log.warning("%s re-enabled for entries", strategy, extra={"ENGINE": self.engine, "STRATEGY": strategy})
        self.on_change()
        return True


def _one_line(exc: Exception) -> str:
    """``ZeroDivisionError: float division by zero at reversion.py:42``: what and where, in one journal line."""
    message = " ".join(str(exc).split())
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" at {where.filename.rsplit('/', 1)[-1]}:{where.lineno}" if where else ""
    return f"{type(exc).__name__}{': ' + message if message else ''}{at}"
