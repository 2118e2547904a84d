"""The daemon lifecycle against a real systemd: Type=notify readiness, STATUS=, the watchdog,
restarts, EX_CONFIG, and journald."""

from __future__ import annotations

import time

import pytest

from daemons.algoctl.sandbox import Sandbox
from tests.helpers import wait_until
from tests.systemd.busclient import publish_once
from tests.systemd.scheduling import cpu_weight

pytestmark = pytest.mark.systemd

HB = "algo-heartbeat.service"
FAST_WATCHDOG = "[Service]\nWatchdogSec=2s\nRestartSec=100ms\n"


def test_activating_until_ready_then_active_with_status(sandbox: Sandbox) -> None:
    sandbox.systemctl("start", "--no-block", HB, check=True)
    # The process runs (MainPID set) while systemd still waits for READY=1: that is Type=notify.
    seen = wait_until(
        lambda: (p := sandbox.show(HB, "ActiveState", "MainPID"))["ActiveState"] == "activating"
        and p["MainPID"] != "0",
        10, "the heartbeat to run while still activating", interval=0.01,
    )
    assert seen
    wait_until(lambda: sandbox.show(HB, "ActiveState")["ActiveState"] == "active", 15, "READY=1")
    props = sandbox.show(HB, "StatusText", "Type", "NRestarts")
    assert props["Type"] == "notify"
    assert props["StatusText"].startswith("connected; heartbeat every 0.1s")
    status = sandbox.systemctl("status", HB).stdout
    assert 'Status: "connected; heartbeat every 0.1s' in status


def test_sigstop_gets_killed_by_the_watchdog_and_restarted(sandbox: Sandbox) -> None:
    sandbox.install_dropin(HB, "fast-watchdog", FAST_WATCHDOG)
    sandbox.daemon_reload()
    sandbox.systemctl("start", HB, check=True)
    first = sandbox.show(HB, "MainPID")["MainPID"]
    sandbox.systemctl("kill", "--signal=SIGSTOP", HB, check=True)
    wait_until(lambda: int(sandbox.show(HB, "NRestarts")["NRestarts"]) >= 1, 20, "a watchdog restart")
    wait_until(lambda: sandbox.show(HB, "ActiveState")["ActiveState"] == "active", 15, "the restarted heartbeat")
    assert sandbox.show(HB, "MainPID")["MainPID"] != first
    log = sandbox.journalctl("-u", HB, "-o", "cat").stdout
    assert "Watchdog timeout" in log
    assert "Failed with result 'watchdog'" in log


def test_failing_health_check_stops_the_watchdog_and_restarts(sandbox: Sandbox) -> None:
    sandbox.install_dropin(HB, "fast-watchdog", FAST_WATCHDOG)
    sandbox.daemon_reload()
    sandbox.systemctl("start", HB, check=True)
    # Take the bus away: the heartbeat's round trip fails, its health check with it (1.5s limit).
    sandbox.systemctl("stop", "algo-bus.socket", "algo-bus.service", check=True)
    wait_until(lambda: int(sandbox.show(HB, "NRestarts")["NRestarts"]) >= 1, 20, "a restart for failed health")
    log = sandbox.journalctl("-u", HB, "-o", "cat").stdout
    assert "unhealthy, no longer feeding the watchdog: no heartbeat round trip" in log
    assert "Failed with result 'watchdog'" in log


def test_bad_config_exits_78_without_restart_loop_and_names_the_key(sandbox: Sandbox) -> None:
    (sandbox.etc / "fleet.toml").write_text("[daemons.heartbeat]\ninterval_sec = -1\n[bus]\nsokcet = '/x'\n")
    sandbox.systemctl("start", HB)  # fails: that is the point
    wait_until(lambda: sandbox.show(HB, "ActiveState")["ActiveState"] == "failed", 15, "the unit to fail")
    time.sleep(1.0)  # RestartSec=200ms: a restart loop would have shown by now
    props = sandbox.show(HB, "ExecMainStatus", "NRestarts", "Result", "ActiveState")
    assert props == {"ExecMainStatus": "78", "NRestarts": "0", "Result": "exit-code", "ActiveState": "failed"}
    errors = sandbox.journalctl("-u", HB, "-p", "err", "-o", "cat").stdout
    assert "daemons.heartbeat.interval_sec: Input should be greater than or equal to 0.01 (got -1)" in errors
    assert "bus.sokcet: unknown key" in errors


def test_journal_priorities_and_structured_fields(sandbox: Sandbox) -> None:
    # Only algo-heartbeat runs here: the units it expects would be flagged silent after silent_after_sec.
    config = sandbox.etc / "fleet.toml"
    config.write_text(config.read_text().replace("silent_after_sec = 5.0", "silent_after_sec = 600.0"))
    sandbox.systemctl("start", HB, check=True)
    publish_once(sandbox, "control.pause", {"engine": "fno", "strategy": "ema-nifty"}, trace="trace-pause-1")
    publish_once(sandbox, "control.resume", {"engine": "fno"}, trace="trace-resume-2")
    wait_until(
        lambda: "trace-resume-2" in sandbox.journalctl("-u", HB, "-o", "verbose").stdout, 10, "the control audit lines"
    )
    by_trace = sandbox.journalctl("TRACE_ID=trace-pause-1", "-o", "cat").stdout.splitlines()
    assert len(by_trace) == 1 and by_trace[0].startswith("control.pause from test-client:")
    by_engine = sandbox.journalctl("ENGINE=fno", "-o", "cat").stdout.splitlines()
    assert [line.split(" ")[0] for line in by_engine] == ["control.pause", "control.resume"]
    assert sandbox.journalctl("STRATEGY=ema-nifty", "-o", "cat").stdout.count("\n") == 1
    # Nothing at warning or worse from a healthy start ...
    assert sandbox.journalctl("-u", HB, "-p", "warning", "-o", "cat").stdout.strip() == ""
    # ... and a warning is exactly that line once the bus disappears.
    sandbox.systemctl("stop", "algo-bus.socket", "algo-bus.service", check=True)
    wait_until(lambda: "unreachable" in sandbox.journalctl("-u", HB, "-p", "warning").stdout, 10, "a warning line")
    warnings = set(sandbox.journalctl("-u", HB, "-p", "warning", "-o", "cat").stdout.splitlines())
    assert warnings == {
        "bus connection lost; reconnecting",
        "bus unreachable at /run/algo/bus.sock (No such file or directory); retrying",
    }
    everything = sandbox.journalctl("-u", HB, "-o", "cat").stdout
    assert "heartbeat ready" in everything and "control.pause from" in everything  # info: not in -p warning


def test_reload_applies_a_good_config_and_keeps_running_on_a_bad_one(sandbox: Sandbox) -> None:
    """systemctl reload returns once the daemon has applied the config, and fails when the daemon refused it
    (ExecReload= is algo-reload, which waits for the outcome: systemd 252 ends the job when ExecReload= exits)."""
    sandbox.systemctl("start", HB, check=True)
    pid = sandbox.show(HB, "MainPID")["MainPID"]
    config = sandbox.etc / "fleet.toml"
    config.write_text(config.read_text().replace("interval_sec = 0.1", "interval_sec = 0.25"))
    sandbox.systemctl("reload", HB, check=True)
    assert sandbox.show(HB, "ActiveState")["ActiveState"] == "active"
    assert "every 0.25s" in sandbox.show(HB, "StatusText")["StatusText"]

    config.write_text("[daemons.heartbeat]\ninterval_sec = 'fast'\n")
    refused = sandbox.systemctl("reload", HB)
    assert refused.returncode != 0 and f"Job for {HB} failed" in refused.stderr
    props = sandbox.show(HB, "MainPID", "ActiveState", "NRestarts", "StatusText")
    assert props["MainPID"] == pid and props["ActiveState"] == "active" and props["NRestarts"] == "0"
    assert props["StatusText"].startswith("CONFIG REFUSED at the last reload, the previous one runs")
    assert "every 0.25s" in props["StatusText"]

    def journal(priority: str) -> str:
        return sandbox.journalctl("-u", HB, "-p", priority, "-o", "cat").stdout

    # The daemon's reasons, from the daemon and again from algo-reload, for systemctl status and the journal
    wait_until(lambda: "algo-reload: refused, the running config is kept" in journal("err"), 5, "algo-reload's line")
    assert "reload rejected, keeping the running config" in journal("err")
    assert journal("err").count("daemons.heartbeat.interval_sec") == 2


def test_the_order_path_runs_ahead_of_market_data_for_the_cpu(sandbox: Sandbox) -> None:
    """The broker, risk and execution run at nice -5 and with four times a service's CPU weight; the tick-heavy
    journal at the defaults."""
    sandbox.systemctl("start", "algo-execution.service", check=True)  # pulls in the bus, risk and the journal

    def nice(unit: str) -> int:
        pid = sandbox.show(unit, "MainPID")["MainPID"]
        stat = sandbox.run("cat", f"/proc/{pid}/stat").stdout
        return int(stat.rsplit(")", 1)[1].split()[16])  # field 19, counted after the command name

    assert {u: nice(f"algo-{u}.service") for u in ("bus", "risk", "execution", "journal")} == {
        "bus": -5, "risk": -5, "execution": -5, "journal": 0}
    # A nice value counts only within the process's autogroup, and each service is a session, so an autogroup, of
    # its own: across services it is the weight of the service's cgroup that counts, which needs one of its own.
    assert {u: cpu_weight(sandbox, f"algo-{u}.service") for u in ("bus", "risk", "execution", "journal")} == {
        "bus": 400, "risk": 400, "execution": 400, "journal": 100}
