"""What every daemon that holds a Kite ticker WebSocket shares: Twisted's reactor and the dial.

``KiteTicker`` runs on Twisted's reactor, which is process-global and cannot be restarted
(docs/KITE.md). It is started once in a daemon thread (as ``connect(threaded=True)`` would, but before
the first dial, so that every call into the clients, which are not thread-safe, happens on the
reactor thread) and never stopped: daemons close their connections only.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from kiteconnect import KiteTicker
from twisted.internet import reactor as _installed_reactor

reactor: Any = _installed_reactor  # typed as an interface without run()'s keywords; it is the installed reactor

__all__ = ["CONNECT_TIMEOUT_SEC", "dial_forever", "ensure_reactor"]

CONNECT_TIMEOUT_SEC = 10  # TCP connect; KiteTicker's 30 s default is a long gap in market hours


class _AtMostWarning(logging.Filter):
    """KiteTicker logs every close and every redial attempt at ERROR: in a minute's outage that is
    dozens of err lines in the journal, for what the daemons handle and report themselves (with
    the connection and what it means). Kept, as warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


logging.getLogger("kiteconnect.ticker").addFilter(_AtMostWarning())

_lock = threading.Lock()
_thread: threading.Thread | None = None


def _run_reactor() -> None:
    reactor.run(installSignalHandlers=False)  # no signal handlers: the daemon's loop owns SIGTERM


def ensure_reactor() -> None:
    """Run Twisted's reactor in a daemon thread unless something already does; never stopped."""
    global _thread
    with _lock:
        if reactor.running or _thread is not None:
            return
        _thread = threading.Thread(target=_run_reactor,
                                   name="twisted-reactor", daemon=True)
        _thread.start()


def dial_forever(kws: KiteTicker, initial_sec: float, factor: float) -> None:
    """On the reactor thread: dial, and redial with backoff for as long as the connection is
    wanted. The client's ``ReconnectingClientFactory`` gets ``maxRetries`` None (Twisted's "no
    limit"): KiteTicker caps ``reconnect_max_tries`` at 300 and would otherwise give up."""
    kws.connect(threaded=True)  # the reactor runs already: this only dials
    factory = kws.factory
    factory.initialDelay = factory.delay = initial_sec
    factory.factor = factor
    factory.maxRetries = None
