"""Small helpers shared by tests."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import NoReturn, TypeVar, cast

import pytest

from daemons.runtime.client import BusClient
from daemons.runtime.transport import UnixTransport
from daemons.runtime.wire import Frame, FrameReader

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll until predicate() is truthy; fail naming what never happened."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def unsent_frames(bus: BusClient) -> list[Frame]:
    """The frames a bus client holds in its outbox: what a daemon published in a test without a broker."""
    outbox = cast(UnixTransport, bus.transport)._outbox
    return FrameReader(1 << 20).feed(b"".join(outbox))


def unavailable(what: str, reason: str) -> NoReturn:
    """A real part a test needs is missing: skip with the reason, except under CI=true, where it must run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true requires the {what} to run, but {reason}")
    pytest.skip(reason)
