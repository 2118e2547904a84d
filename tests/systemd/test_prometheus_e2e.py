"""A real Prometheus (Debian's) scrapes the paper fleet in the sandbox with the shipped scrape
config and alert rules: every metric a dashboard or an alert reads is really exported, and stopping
an engine takes its DaemonDown alert through pending to firing, and restarting it resolves it."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemons.algoctl.sandbox import Sandbox
from grafana import promql
from tests.conftest import REPO
from tests.helpers import wait_until
from tests.test_alerts import FILE_SD_EXAMPLE, alerting_rules, installed_layout, need
from tests.test_dashboards import dashboards, queries

pytestmark = pytest.mark.systemd

# Rows under "Live mode only" in docs/METRICS.md: a paper fleet cannot export them.
LIVE_ONLY = set(re.findall(r"^\| `(algo_\w+)` \|", (REPO / "docs" / "METRICS.md").read_text()
                           .split("### Live mode only")[1], re.M))


def compressed(config: Path) -> None:
    """Same rules and labels, faster clock: scrape and evaluate every second, DaemonDown after 5 s."""
    config.write_text(re.sub(r"(scrape_interval|evaluation_interval): 15s", r"\1: 1s", config.read_text())
                      .replace("scrape_timeout: 10s", "scrape_timeout: 1s"))
    rules = config.parent / "rules" / "algo.rules.yml"
    doc = yaml.safe_load(rules.read_text())
    for group in doc["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if rule.get("alert") == "DaemonDown":
                rule["for"] = "5s"
    rules.write_text(yaml.safe_dump(doc))


class Prometheus:
    def __init__(self, root: Path) -> None:
        config = installed_layout(root / "etc")
        compressed(config)
        self.log = root / "prometheus.log"
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [need("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={root / 'data'}",
                 "--web.listen-address=127.0.0.1:0"], stdout=log, stderr=subprocess.STDOUT)
        found = wait_until(lambda: self.proc.poll() is not None or re.search(
            r'msg="Listening on" address=(127\.0\.0\.1:\d+)', self.log.read_text()), 20, "Prometheus to listen")
        assert self.proc.poll() is None, self.log.read_text()
        self.url = f"http://{found.group(1)}"  # type: ignore[union-attr]
        wait_until(self.ready, 30, "Prometheus to be ready (TSDB loaded)")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=5) as response:
            return json.load(response)["data"]

    def alerts(self, name: str, daemon: str) -> list[dict[str, Any]]:
        return [a for a in self.api("alerts")["alerts"]
                if a["labels"]["alertname"] == name and a["labels"].get("daemon") == daemon]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def test_a_real_prometheus_scrapes_the_fleet_and_pages_for_a_stopped_engine(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.systemctl("start", "algo.target", check=True)
    prom = Prometheus(tmp_path)
    try:
        # Every target of the shipped example (the fleet's nine daemons and algo-commander), each up: not a
        # count, which a scrape taken before the slowest daemon started could match with one missing.
        targets = {entry["labels"]["__algo_unit"].removeprefix("algo-") for entry in yaml.safe_load(FILE_SD_EXAMPLE.read_text())}
        wait_until(lambda: {r["metric"]["daemon"] for r in prom.api("query", query='up{job="algo"} == 1')["result"]} == targets,
                   30, f"every target scraped and up: {sorted(targets)}")
        wanted: dict[str, set[str]] = {}
        for rule in alerting_rules():
            for name in promql.metric_names(rule["expr"]):
                wanted.setdefault(name, set()).add(f"alert {rule['alert']}")
        for board_name, board in dashboards():
            for _, expr in queries(board):
                for name in promql.metric_names(expr):
                    wanted.setdefault(name, set()).add(f"dashboard {board_name}")
        def missing() -> dict[str, set[str]]:
            exported = set(prom.api("label/__name__/values"))
            return {n: where for n, where in wanted.items() if n not in exported and n not in LIVE_ONLY}

        deadline = time.monotonic() + 30  # every daemon's first scrape ingested (a loaded machine is slower)
        while missing() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not missing(), f"queried but not exported by the running paper fleet: {missing()}"

        sandbox.systemctl("stop", "algo-equity.service", check=True)
        pending = wait_until(lambda: [a for a in prom.alerts("DaemonDown", "equity") if a["state"] == "pending"],
                             20, "DaemonDown to go pending")
        firing = wait_until(lambda: [a for a in prom.alerts("DaemonDown", "equity") if a["state"] == "firing"],
                            30, "DaemonDown to fire")[0]
        assert pending and firing["labels"]["severity"] == "page" and firing["labels"]["instance"] == "127.0.0.1:9474"
        assert firing["annotations"]["summary"] == "algo-equity is down"
        assert "systemctl status algo-equity" in firing["annotations"]["runbook"]
        assert not prom.alerts("DaemonDown", "fno"), "only the stopped engine is down"

        sandbox.systemctl("start", "algo-equity.service", check=True)
        wait_until(lambda: not prom.alerts("DaemonDown", "equity"), 30, "the alert to resolve after the restart")
    finally:
        prom.stop()
