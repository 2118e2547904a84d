"""Stopping the processes a sandbox, a test or a bench started outside systemd: what systemd's
``KillMode=``/``TimeoutStopSec=`` do for a unit, for plain child processes."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterable
from contextlib import suppress
from typing import Any


def stop_all(procs: Iterable[subprocess.Popen[Any]], timeout: float) -> None:
    """SIGTERM to every one still running (SIGCONT first: a stopped process cannot act on it), then up to
    ``timeout`` seconds each to exit before SIGKILL. They stop together, so a slow one does not hold the
    others' SIGTERM back."""
    live = [p for p in procs if p.poll() is None]
    for proc in live:
        with suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
    for proc in live:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
