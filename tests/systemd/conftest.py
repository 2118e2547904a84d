"""The compressed paper session that test_paper_session.py and test_portfolios.py both read: one run of the
whole fleet under systemd (about a minute) serves both modules, with the equity strategies followed by
three portfolios (one disabled). The sandbox is stopped before the tests read what it left."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from daemons.algoctl.sandbox import Sandbox
from tests.conftest import require_systemd_sandbox
from tests.helpers import wait_until
from tests.systemd.fleet import (
    assert_books_agree,
    assert_risk_positions_agree,
    events,
    rows,
    session_config,
    today,
    wait_session_closed,
)

FOLLOWED = ("rsi-infy", "rsi-reliance")
# One lot each: the net order (two lots) fills whole on the next tick. A larger one fills over several
# ticks, and a signal on one of them races that tick's fill to the engine and to risk (execution and the
# engine read the same tick at once), so the exit's size, and with it a replay's orders, would depend
# on which came first.
PORTFOLIOS = "".join(f"""
[[portfolios]]
id = "{pid}"
capital = {capital}
strategies = ["rsi-infy", "rsi-reliance"]
risk_fraction = 0.1
max_lots = 1
enabled = {enabled}
""" for pid, capital, enabled in (("acct-a", 1000000.0, "true"), ("acct-b", 2500000.0, "true"),
                                   ("acct-off", 1000000.0, "false")))


def paper_config(**replace: str) -> str:
    """The session's fleet.toml (a replay of it too: the same portfolios, or the orders would differ)."""
    return session_config(**replace) + PORTFOLIOS


def run_fleet(root: Path, config_text: str) -> Sandbox:
    box = Sandbox(root)
    config = root.parent / f"{root.name}.toml"
    config.write_text(config_text)
    box.prepare(config)
    box.start()
    return box


@pytest.fixture(scope="package")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require_systemd_sandbox()
    root = tmp_path_factory.mktemp("session")
    box = run_fleet(root / "sandbox", paper_config())
    try:
        box.systemctl("start", "algo.target", check=True)
        wait_session_closed(box)
        # an operator's kill switch at the end: the session's journal then holds an err line too
        box.run(sys.prefix + "/bin/algoctl", "kill-switch", "on", "--reason", "end of the test session", check=True)
        wait_until(lambda: "KILL SWITCH" in box.show("algo-risk.service", "StatusText")["StatusText"], 10, "the switch")
        box.systemctl("start", "algo-eod.service", check=True, timeout=60)
        books = assert_books_agree(box)
        assert_risk_positions_agree(box, books)
        result = {
            "box": box,
            "books": books,
            "signals": rows(box, "signals.csv"),
            "decisions": rows(box, "decisions.csv"),
            "orders": rows(box, "orders.csv"),
            "approved": [e["payload"] for e in events(box, "risk.approved")],
            "allocations": [e["payload"] for e in events(box, "portfolio.allocation")],
            "portfolio_log": (box.state / "risk" / "portfolios" / f"{today()}.wal").read_bytes(),
            "report": orjson.loads((box.state / "reports" / f"{today()}.json").read_bytes()),
            "markdown": (box.state / "reports" / f"{today()}.md").read_text(),
            "status": box.run(sys.prefix + "/bin/algoctl", "status").stdout,
        }
    finally:
        box.stop()
    yield result
