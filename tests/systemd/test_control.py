"""Operating the fleet without touching the rest of it: algoctl's kill switch and pause over the
bus, one strategy in its own unit, systemctl reload per engine, and pre-market keeping the engines
down with its reason in the journal."""

from __future__ import annotations

import socket
import sys

import pytest

from daemons.algoctl.sandbox import Sandbox
from daemons.runtime.envelope import RISK_APPROVED, RISK_BLOCKED
from tests.helpers import wait_until
from tests.systemd.busclient import Listener
from tests.systemd.test_risk import signal, tick

pytestmark = pytest.mark.systemd

ALGOCTL = sys.prefix + "/bin/algoctl"


def decisions(bus: Listener) -> list[tuple[str, str]]:
    return [(e.type, e.payload.get("block_code", "")) for _, e in bus.events if e.type in (RISK_APPROVED, RISK_BLOCKED)]


def test_algoctl_kill_switch_blocks_the_next_entry_and_releases(sandbox: Sandbox) -> None:
    sandbox.systemctl("start", "algo-risk.service", check=True)
    with Listener(sandbox, "risk.*", "control.*") as bus:
        bus.tick(tick("INFY", 1000.0))
        on = sandbox.run(ALGOCTL, "kill-switch", "on", "--reason", "flat before the RBI policy")
        assert on.returncode == 0 and "kill switch on sent" in on.stdout, on.stderr
        wait_until(lambda: "KILL SWITCH" in sandbox.show("algo-risk.service", "StatusText")["StatusText"], 5,
                   "risk to engage the kill switch")
        bus.publish("strategy.signal", signal("INFY", "BUY", 5, True))
        bus.publish("strategy.signal", signal("INFY", "SELL", 5, False))  # exits still pass
        wait_until(lambda: len(decisions(bus)) == 2, 5, "two decisions")
        assert sandbox.run(ALGOCTL, "kill-switch", "off").returncode == 0
        wait_until(lambda: "kill switch off" in sandbox.show("algo-risk.service", "StatusText")["StatusText"], 5,
                   "the release")
        bus.publish("strategy.signal", signal("INFY", "BUY", 5, True))
        wait_until(lambda: len(decisions(bus)) == 3, 5, "a third decision")
    assert decisions(bus) == [("risk.blocked", "kill_switch"), ("risk.approved", ""), ("risk.approved", "")]
    status = sandbox.show("algo-risk.service", "StatusText")["StatusText"]
    assert "kill switch off" in status
    log = sandbox.journalctl("-u", "algo-risk.service", "-o", "cat").stdout
    assert "KILL SWITCH ENGAGED: flat before the RBI policy (root via algoctl)" in log
    assert "kill switch released by algoctl" in log


def test_algoctl_pause_and_resume_one_strategy(sandbox: Sandbox) -> None:
    sandbox.systemctl("start", "algo-equity.service", check=True)
    out = sandbox.run(ALGOCTL, "pause", "rsi-infy")
    assert out.returncode == 0, out.stderr
    wait_until(lambda: "(1 paused)" in sandbox.show("algo-equity.service", "StatusText")["StatusText"], 10,
               "the engine to report the pause")
    assert sandbox.run(ALGOCTL, "resume", "rsi-infy").returncode == 0
    wait_until(lambda: "paused" not in sandbox.show("algo-equity.service", "StatusText")["StatusText"], 10,
               "the resume")
    log = sandbox.journalctl("-u", "algo-equity.service", "STRATEGY=rsi-infy", "-o", "cat").stdout
    assert "rsi-infy paused: entries blocked" in log and "rsi-infy resumed" in log
    bad = sandbox.run(ALGOCTL, "pause", "no-such")
    assert bad.returncode == 1 and "'no-such' is neither an engine nor a strategy" in bad.stderr
    status = sandbox.run(ALGOCTL, "status").stdout
    assert "algo-equity.service" in status and "active/running" in status


def test_a_strategy_runs_alone_and_an_engine_reloads_alone(sandbox: Sandbox) -> None:
    config = sandbox.etc / "fleet.toml"
    config.write_text(config.read_text().replace(
        'name = "rsi-reliance"\nkind = "rsi_reversion"',
        'name = "rsi-reliance"\nkind = "rsi_reversion"\nprocess = "own"\nmetrics_port = 9490'))
    sandbox.systemctl("start", "algo-equity.service", "algo-strategy@rsi-reliance.service", check=True)
    own = sandbox.show("algo-strategy@rsi-reliance.service", "ActiveState", "StatusText", "MainPID")
    assert own["ActiveState"] == "active" and own["StatusText"].startswith("paper: 1 strategies")
    assert sandbox.show("algo-equity.service", "StatusText")["StatusText"].startswith("paper: 1 strategies")
    equity_pid = sandbox.show("algo-equity.service", "MainPID")["MainPID"]
    sandbox.systemctl("reload", "algo-equity.service", check=True)
    wait_until(lambda: "reloaded" in sandbox.journalctl(
        "-u", "algo-equity.service", "-o", "cat").stdout, 10, "the reload")
    assert sandbox.show("algo-equity.service", "MainPID")["MainPID"] == equity_pid
    assert sandbox.show("algo-strategy@rsi-reliance.service", "MainPID")["MainPID"] == own["MainPID"]
    sandbox.systemctl("stop", "algo-strategy@rsi-reliance.service", check=True)
    assert sandbox.show("algo-equity.service", "ActiveState")["ActiveState"] == "active"


def test_premarket_failure_keeps_the_engines_down_with_its_reason(sandbox: Sandbox) -> None:
    state = sandbox.state / "fno"
    state.mkdir()
    state.chmod(0o500)  # owned by root: the algo user cannot write its checkpoints here
    result = sandbox.systemctl("start", "algo-fno.service")
    assert result.returncode != 0
    assert sandbox.show("algo-fno.service", "ActiveState")["ActiveState"] in ("inactive", "failed")
    assert sandbox.show("algo-premarket.service", "Result")["Result"] == "exit-code"
    errors = sandbox.journalctl("-t", "algo-premarket", "-p", "err", "-o", "cat").stdout.splitlines()
    assert errors == ["premarket FAILED: state directories: /var/lib/algo/fno is not writable by user algo: "
                      "Permission denied"]


def test_a_metrics_port_taken_by_another_process_keeps_the_fleet_down_naming_it(sandbox: Sandbox) -> None:
    """No engine starts to trade beside a daemon that cannot listen: premarket sees the port risk will
    need held by someone else (this test, as root) and fails naming the port and its config path."""
    with socket.create_server(("127.0.0.1", 9476)):
        result = sandbox.systemctl("start", "algo-fno.service")
        assert result.returncode != 0
        errors = sandbox.journalctl("-t", "algo-premarket", "-p", "err", "-o", "cat").stdout.splitlines()
    assert errors == ["premarket FAILED: ports: port 9476 (daemons.risk.metrics_port) is taken by user root, a process "
                      "this check cannot see: stop that process or choose another port in fleet.toml"]
    assert sandbox.show("algo-fno.service", "ActiveState")["ActiveState"] in ("inactive", "failed")
