"""Shadows of algo-risk and algo-execution rehearse the order path (runtime/rehearsal.py): every rehearsal
takes the path a real event takes (approved; placed), and nothing of it reaches the real daemon, the bus,
the disk or the logs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daemons.execution.main import ExecutionDaemon
from daemons.execution.orders import Order
from daemons.execution.rehearsal import rehearsal as rehearsal_of_execution
from daemons.execution.sender import Sender
from daemons.risk.main import RiskDaemon
from daemons.risk.rehearsal import rehearsal as rehearsal_of_risk
from daemons.runtime.config import load_config
from daemons.runtime.metrics import DaemonMetrics
from daemons.runtime.rehearsal import SYMBOL as REHEARSAL
from daemons.runtime.rehearsal import NullTransport, rehearse
from tests.conftest import REPO


def risk_at(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RiskDaemon:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    return RiskDaemon(load_config(REPO / "configs" / "paper.toml"), DaemonMetrics("risk"))


def rehearse_until(step: Callable[[], None], done: Callable[[], bool]) -> None:
    """Rehearsals every millisecond, as a daemon runs them (loggers muted), until ``done()``."""
    stopping = asyncio.Event()

    def until() -> None:
        step()
        if done():
            stopping.set()

    asyncio.run(asyncio.wait_for(rehearse(until, 0.001, stopping, logging.getLogger("algo")), 10))


def test_the_shadow_approves_every_rehearsal_and_the_real_risk_sees_none_of_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    risk = risk_at(tmp_path, monkeypatch)
    approvals: list[tuple[RiskDaemon, dict[str, Any]]] = []
    real_approve = RiskDaemon._approve

    def spy(self: RiskDaemon, order: dict[str, Any], trace: str) -> None:
        approvals.append((self, order))
        real_approve(self, order, trace)

    monkeypatch.setattr(RiskDaemon, "_approve", spy)
    caplog.set_level(logging.DEBUG)
    rehearse_until(rehearsal_of_risk(risk), lambda: len(approvals) == 40)

    shadows = {id(who) for who, _ in approvals}
    assert len(approvals) == 40 and id(risk) not in shadows and len(shadows) == 1  # the approved path, every time
    assert [o["side"] for _, o in approvals[:4]] == ["BUY", "SELL", "BUY", "SELL"]  # an entry and an exit in turn
    shadow = approvals[0][0]
    assert isinstance(shadow.bus.transport, NullTransport)
    assert not shadow.recent and shadow.rules.book.marks.keys() == {REHEARSAL}  # nothing piles up
    assert set(shadow.instruments) == {REHEARSAL}
    assert not shadow.rules.book.open_symbols()

    assert risk.bus.published == {} and risk.bus.transport.queued_bytes == 0  # the real bus: nothing
    assert risk.metrics.registry.get_sample_value("algo_risk_decisions_total", {"reason": "approved"}) == 0
    assert not risk.recent and not risk.rules.book.marks and REHEARSAL not in risk.instruments
    assert list(tmp_path.iterdir()) == []  # no state read or written
    assert not [r for r in caplog.records if r.name == "algo.risk"]  # muted: not one line


def test_executions_shadow_places_every_rehearsal_and_the_real_execution_sees_none_of_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    execution = ExecutionDaemon(load_config(REPO / "configs" / "paper.toml"), DaemonMetrics("execution"))
    placed: list[tuple[Sender, Order]] = []
    real_placed = Sender._placed

    def spy(self: Sender, order: Order, at_broker: Any) -> None:
        real_placed(self, order, at_broker)
        placed.append((self, order))

    monkeypatch.setattr(Sender, "_placed", spy)
    caplog.set_level(logging.DEBUG)
    rehearse_until(rehearsal_of_execution(execution), lambda: len(placed) == 40)

    shadows = {id(who) for who, _ in placed}
    assert len(placed) == 40 and id(execution.sender) not in shadows and len(shadows) == 1  # past the governor, margin
    assert {o.status for _, o in placed} == {"OPEN"} and [o.side for _, o in placed[:2]] == ["BUY", "SELL"]
    shadow = placed[0][0]
    assert isinstance(shadow.tell.bus.transport, NullTransport) and shadow.kite is None
    assert shadow.day is not None and shadow.day.paper is not None
    ledger, paper = shadow.day.ledger, shadow.day.paper
    assert not ledger.orders and not paper.orders and not ledger.exposure.units  # nothing kept
    assert str(ledger.log.wal.path) == str(paper.path) == "/dev/null"

    assert execution.bus.published == {} and execution.ledger is None and execution.paper is None
    assert execution.metrics.registry.get_sample_value("algo_execution_orders_total", {"status": "OPEN"}) == 0
    assert list(tmp_path.iterdir()) == []
    assert not [r for r in caplog.records if r.name.startswith("algo")]


def test_the_rehearsal_runs_until_the_daemon_stops_and_a_failing_one_ends_with_one_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("algo.test-rehearsal")
    seen: list[bool] = []

    def step() -> None:
        seen.append(logger.isEnabledFor(logging.ERROR))  # muted while it runs
        if len(seen) == 3:
            raise KeyError("broken")

    async def run() -> None:
        stopping = asyncio.Event()
        await asyncio.wait_for(rehearse(step, 0.001, stopping, logger), 5)  # returns by itself after the error

        calls = 0

        def count() -> None:
            nonlocal calls
            calls += 1

        task = asyncio.create_task(rehearse(count, 0.001, stopping, logger))
        await asyncio.sleep(0.05)
        stopping.set()
        await asyncio.wait_for(task, 1)  # ends once the daemon stops
        assert calls >= 5

    caplog.set_level(logging.WARNING, logger.name)
    asyncio.run(run())
    assert seen == [False, False, False] and logger.isEnabledFor(logging.ERROR) and not logger.disabled
    warnings = [r.getMessage() for r in caplog.records if r.name == logger.name]
    assert len(warnings) == 1 and "rehearsal stopped (the daemon is unaffected" in warnings[0]
    assert "KeyError: 'broken'" in warnings[0]
