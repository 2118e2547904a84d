"""Fleet liveness under systemd: every daemon of algo.target heartbeats and algo-heartbeat sees each one;
a frozen daemon (SIGSTOP) is flagged silent (metric, an err line, the status line) and recovers."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest

from daemons.algoctl.sandbox import Sandbox
from tests.conftest import TEST_CONFIG
from tests.helpers import wait_until

pytestmark = pytest.mark.systemd

HEARTBEAT = "algo-heartbeat.service"
# Every long-running unit of algo.target but the broker (the bus itself), as configs/paper.toml has it.
UNITS = ["algo-heartbeat", "algo-marketdata", "algo-fno", "algo-equity", "algo-options", "algo-risk",
         "algo-execution", "algo-journal", "algo-commander"]


def liveness() -> dict[str, dict[str, float]]:
    """{metric: {unit: value}} of algo-heartbeat's per-unit series."""
    try:
        body = urllib.request.urlopen("http://127.0.0.1:9471/metrics", timeout=5).read().decode()
    except urllib.error.URLError:
        return {}
    out: dict[str, dict[str, float]] = {}
    for m in re.finditer(r'^(algo_heartbeat_\w+)\{host="[^"]+",unit="([^"]+)"\} (\S+)$', body, re.MULTILINE):
        out.setdefault(m[1], {})[m[2]] = float(m[3])
    return out


def test_every_daemon_heartbeats_and_a_frozen_one_is_flagged_silent(sandbox: Sandbox) -> None:
    (sandbox.etc / "fleet.toml").write_text(TEST_CONFIG.replace("silent_after_sec = 5.0", "silent_after_sec = 2.0"))
    sandbox.systemctl("start", "algo.target", check=True)
    wait_until(lambda: sorted(liveness().get("algo_heartbeat_last_seen_timestamp_seconds", {})) == sorted(UNITS), 30,
               "a heartbeat from every daemon")
    seen = liveness()
    assert seen["algo_heartbeat_silent"] == dict.fromkeys(UNITS, 0.0)
    assert seen["algo_heartbeat_daemon_healthy"] == dict.fromkeys(UNITS, 1.0)
    tick_consumers = {"algo-marketdata", "algo-fno", "algo-equity", "algo-options"}
    wait_until(lambda: set(liveness().get("algo_heartbeat_tick_age_seconds", {})) == tick_consumers, 20,
               "the tick age of the feed and every engine")

    sandbox.systemctl("kill", "--signal=SIGSTOP", "algo-equity.service", check=True)
    try:
        wait_until(lambda: liveness()["algo_heartbeat_silent"]["algo-equity"] == 1.0, 5, "algo-equity flagged silent")
        status = sandbox.show(HEARTBEAT, "StatusText")["StatusText"]
        wait_until(lambda: "SILENT: algo-equity" in sandbox.show(HEARTBEAT, "StatusText")["StatusText"], 5,
                   f"the status line to name it (was {status!r})")
        assert all(v == 0.0 for u, v in liveness()["algo_heartbeat_silent"].items() if u != "algo-equity")
    finally:
        sandbox.systemctl("kill", "--signal=SIGCONT", "algo-equity.service", check=True)
    wait_until(lambda: liveness()["algo_heartbeat_silent"]["algo-equity"] == 0.0, 5, "algo-equity back")
    errors = sandbox.journalctl("-u", HEARTBEAT, "-p", "err", "DAEMON_UNIT=algo-equity", "-o", "cat").stdout
    silent = r"^algo-equity on \S+ silent: no heartbeat for [\d.]+s \(limit 2s\)$"
    assert len(re.findall(silent, errors, re.MULTILINE)) == 1, errors
    back = sandbox.journalctl("-u", HEARTBEAT, "DAEMON_UNIT=algo-equity", "-o", "cat").stdout
    assert re.search(r"^algo-equity on \S+ heartbeats again after [\d.]+s$", back, re.MULTILINE), back
