"""Shared fixtures. Tests that boot a private systemd skip without root, except under CI=true."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemons.algoctl.sandbox import Sandbox, unavailable_reason
from daemons.runtime.logs import HANDLER_NAME
from tests.helpers import unavailable

REPO = Path(__file__).resolve().parents[1]

# The fleet as the systemd tests run it: paper.toml with a faster heartbeat and a short outage limit.
TEST_CONFIG = (REPO / "configs" / "paper.toml").read_text().replace(
    "interval_sec = 1.0", "interval_sec = 0.1"
).replace("max_bus_outage_sec = 10.0", "max_bus_outage_sec = 1.5")


def require_systemd_sandbox() -> None:
    reason = unavailable_reason()
    if reason is not None:
        unavailable("systemd tests", reason)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    require_systemd_sandbox()
    box = Sandbox(tmp_path / "sandbox")
    config = tmp_path / "fleet.toml"
    config.write_text(TEST_CONFIG)
    box.prepare(config)
    box.start()
    try:
        yield box
    finally:
        box.stop()


@pytest.fixture(autouse=True)
def _drop_daemon_log_handlers() -> Iterator[None]:
    """A daemon's main() installs a root handler on the stderr of its test; left behind, it would
    write later tests' lines (the Twisted reactor's, say) to a stream pytest has closed."""
    yield
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(handler)
