"""Alert rules (grafana/alerts/) and the Prometheus scrape config (grafana/prometheus/), judged by promtool
and Prometheus themselves: the rules load, every alert's promtool cases pass, every alert carries what an
operator needs, reads only catalogued metrics, and the scrape config gives every daemon its labels.

promtool and prometheus come from Debian's `prometheus` package; without it these tests skip, except
under CI=true where they fail.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import tomllib
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemons.runtime.config import load_config
from grafana.promql import catalogue, known_metrics, metric_names
from tests.helpers import unavailable

REPO = Path(__file__).resolve().parents[1]
GRAFANA = REPO / "grafana"
RULES = GRAFANA / "alerts" / "algo.rules.yml"
RULE_TESTS = sorted((GRAFANA / "alerts" / "tests").glob("*.yml"))
PROMETHEUS_CONFIG = GRAFANA / "prometheus" / "prometheus.yml"
FILE_SD_EXAMPLE = GRAFANA / "prometheus" / "file_sd" / "algo-local.yml"
METRICS_MD = REPO / "docs" / "METRICS.md"

SEVERITIES = {"page", "ticket"}
ANNOTATIONS = {"summary", "description", "runbook"}
RUNBOOK_COMMANDS = re.compile(r"\b(journalctl|systemctl|algoctl)\b")


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path:
        return path
    unavailable("promtool tests", f"{tool} is not installed (Debian: apt-get install prometheus)")


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alerting_rules() -> list[dict[str, Any]]:
    return [rule for group in load(RULES)["groups"] for rule in group["rules"] if "alert" in rule]


ALERTS = alerting_rules()
ALERT_NAMES = sorted({rule["alert"] for rule in ALERTS})


def run(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


# --- promtool -------------------------------------------------------------------------------------------

def test_promtool_check_rules() -> None:
    result = run(need("promtool"), "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_tests_pass() -> None:
    assert RULE_TESTS, "no promtool test files under grafana/alerts/tests/"
    result = run(need("promtool"), "test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_tests_use_the_rules_file() -> None:
    for path in RULE_TESTS:
        files = [(path.parent / f).resolve() for f in load(path)["rule_files"]]
        assert files == [RULES.resolve()], f"{path.name} must test {RULES.relative_to(REPO)}"


# --- what every alert carries ---------------------------------------------------------------------------

@pytest.mark.parametrize("rule", ALERTS, ids=[rule["alert"] for rule in ALERTS])
def test_alert_has_severity_and_annotations(rule: dict[str, Any]) -> None:
    assert rule.get("labels", {}).get("severity") in SEVERITIES, f"severity must be one of {sorted(SEVERITIES)}"
    annotations = rule.get("annotations", {})
    missing = ANNOTATIONS - annotations.keys()
    assert not missing, f"missing annotations: {sorted(missing)}"
    assert all(str(annotations[key]).strip() for key in ANNOTATIONS), "empty annotation"
    assert RUNBOOK_COMMANDS.search(annotations["runbook"]), "the runbook must name the command to run"


def test_alert_names_are_unique() -> None:
    assert len(ALERT_NAMES) == len(ALERTS)


def promtool_cases() -> dict[str, dict[str, list[list[dict[str, Any]]]]]:
    """{alertname: {"fires": [exp_alerts, ...], "silent": [[], ...]}} over every promtool test file."""
    cases: dict[str, dict[str, list[list[dict[str, Any]]]]] = defaultdict(lambda: {"fires": [], "silent": []})
    for path in RULE_TESTS:
        for test in load(path)["tests"]:
            for case in test.get("alert_rule_test", []):
                expected = case.get("exp_alerts") or []
                cases[case["alertname"]]["fires" if expected else "silent"].append(expected)
    return cases


@pytest.mark.parametrize("rule", ALERTS, ids=[rule["alert"] for rule in ALERTS])
def test_alert_has_a_firing_and_a_silent_promtool_case(rule: dict[str, Any]) -> None:
    cases = promtool_cases()[rule["alert"]]
    assert cases["fires"], "no promtool case where it fires"
    assert cases["silent"], "no promtool case where it stays silent (exp_alerts: [])"
    for expected in (alert for alerts in cases["fires"] for alert in alerts):
        assert expected.get("exp_labels", {}).get("severity") == rule["labels"]["severity"], \
            "a firing case must assert the severity label"
        assert set(expected.get("exp_annotations", {})) == set(rule["annotations"]), \
            "a firing case must assert every annotation exactly"


def test_promtool_cases_name_existing_alerts() -> None:
    unknown = set(promtool_cases()) - set(ALERT_NAMES)
    assert not unknown, f"promtool cases for alerts that do not exist: {sorted(unknown)}"


# --- metrics --------------------------------------------------------------------------------------------

def test_metric_name_extraction() -> None:
    assert metric_names('up{job="algo"} == 0') == {"up"}
    assert metric_names('sum by (daemon, le) (rate(algo_x_bucket{a="b",c=~"d|e"}[$__rate_interval]))') == {
        "algo_x_bucket"}
    assert metric_names("a > 0 and on (instance) time() - b{job=\"x\"} < 3600") == {"a", "b"}
    assert metric_names("0.2 * algo_y offset 5m") == {"algo_y"}
    assert metric_names('label_values(algo_z{job="algo"}, daemon)') == {"algo_z"}
    assert metric_names("histogram_quantile(0.99, sum without (instance) (rate(m[1e3s])))") == {"m"}


@pytest.mark.parametrize("rule", ALERTS, ids=[rule["alert"] for rule in ALERTS])
def test_alert_reads_catalogued_metrics(rule: dict[str, Any]) -> None:
    names = metric_names(rule["expr"])
    assert names, "no metric found in the expression"
    unknown = names - known_metrics(METRICS_MD)
    assert not unknown, f"not in docs/METRICS.md: {sorted(unknown)}"


def test_catalogue_parses() -> None:
    types = catalogue(METRICS_MD)
    assert len(types) > 40 and types["algo_execution_tick_to_order_seconds"] == "histogram"


# --- the Prometheus configuration -----------------------------------------------------------------------

def installed_layout(root: Path, file_sd: Path = FILE_SD_EXAMPLE) -> Path:
    """prometheus.yml with /etc/prometheus/ moved to `root`, beside the rules and the example targets."""
    (root / "rules").mkdir(parents=True)
    (root / "file_sd").mkdir()
    shutil.copy(RULES, root / "rules" / RULES.name)
    shutil.copy(file_sd, root / "file_sd" / file_sd.name)
    config = root / "prometheus.yml"
    config.write_text(PROMETHEUS_CONFIG.read_text(encoding="utf-8").replace("/etc/prometheus/", f"{root}/"))
    return config


def test_prometheus_config_points_at_the_shipped_files() -> None:
    config = load(PROMETHEUS_CONFIG)
    assert [Path(f).name for f in config["rule_files"]] == [RULES.name]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "algo"]
    assert job["file_sd_configs"][0]["files"] == ["/etc/prometheus/file_sd/algo-*.yml"]
    assert config["global"]["evaluation_interval"] == "15s"  # what the promtool tests assume


def test_promtool_check_config(tmp_path: Path) -> None:
    result = run(need("promtool"), "check", "config", str(installed_layout(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr


def test_file_sd_example_matches_the_paper_config() -> None:
    ports = {name: section["metrics_port"]
             for name, section in tomllib.loads((REPO / "configs" / "paper.toml").read_text())["daemons"].items()
             if isinstance(section, dict) and "metrics_port" in section}
    ports["commander"] = load_config(REPO / "configs" / "paper.toml").commander.metrics_port
    listed = {entry["labels"]["__algo_unit"]: target for entry in load(FILE_SD_EXAMPLE) for target in entry["targets"]}
    assert listed == {f"algo-{name}": f"127.0.0.1:{port}" for name, port in ports.items()}


def prometheus_targets(tmp_path: Path, file_sd: Path) -> list[dict[str, Any]]:
    """Start Prometheus on the installed layout (a free loopback port) and read its active targets."""
    config = installed_layout(tmp_path / "etc", file_sd)
    log_path = tmp_path / "prometheus.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [need("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
             "--web.listen-address=127.0.0.1:0"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = re.search(r'msg="Listening on" address=(127\.0\.0\.1:\d+)', log_path.read_text())
            if found:
                url = f"http://{found.group(1)}/api/v1/targets?state=active"
                try:
                    with urllib.request.urlopen(url, timeout=2) as response:
                        targets: list[dict[str, Any]] = json.load(response)["data"]["activeTargets"]
                except OSError:
                    targets = []
                if targets:
                    return targets
            assert proc.poll() is None, log_path.read_text()
            time.sleep(0.2)
        pytest.fail("Prometheus listed no targets within 20 s:\n" + log_path.read_text())
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_scrape_config_labels_every_daemon(tmp_path: Path) -> None:
    file_sd = tmp_path / "algo-test.yml"
    entries = load(FILE_SD_EXAMPLE) + [
        {"targets": ["127.0.0.1:9480"], "labels": {"__algo_unit": "algo-strategy@ema-nifty.service"}}]
    file_sd.write_text(yaml.safe_dump(entries))
    got = sorted((t["labels"]["daemon"], t["labels"]["instance"], t["labels"]["job"]) for t in
                 prometheus_targets(tmp_path, file_sd))
    want = sorted([(entry["labels"]["__algo_unit"].removeprefix("algo-"), entry["targets"][0], "algo")
                   for entry in load(FILE_SD_EXAMPLE)] + [("strategy@ema-nifty", "127.0.0.1:9480", "algo")])
    assert got == want
