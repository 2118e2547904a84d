"""Dashboards as code (grafana/dashboards/) and Grafana provisioning (grafana/provisioning/): the committed
JSON is what the code generates, every query reads catalogued metrics through the provisioned datasource,
and the provisioning files fit together (datasource uid, dashboard path, alert routing by severity).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from grafana import generate
from grafana.alerting import FOLDER, grafana_rules
from grafana.dashboards import DASHBOARDS
from grafana.promql import known_metrics, metric_names

REPO = Path(__file__).resolve().parents[1]
GRAFANA = REPO / "grafana"
PROVISIONING = GRAFANA / "provisioning"
METRICS_MD = REPO / "docs" / "METRICS.md"
JSON_FILES = sorted(generate.JSON_DIR.glob("*.json"))


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def datasource_uid() -> str:
    (source,) = load(PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    return str(source["uid"])


def dashboards() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in JSON_FILES:
        yield path.name, load(path)  # JSON is YAML


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and query variable."""
    for panel in panels(board):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            yield f"variable {variable['name']!r}", query if isinstance(query, str) else query["query"]


# --- generated files ------------------------------------------------------------------------------------

def test_committed_files_are_what_the_code_generates() -> None:
    problems = generate.check(generate.render())
    assert not problems, "\n".join(problems) + "\nrun: python -m grafana.generate"


def check_exit_code(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "grafana.generate", "--check"], cwd=root, capture_output=True,
                          text=True, timeout=120, check=False)


def test_generate_check_exit_codes(tmp_path: Path) -> None:
    ok = check_exit_code(REPO)
    assert ok.returncode == 0, ok.stderr
    copy = tmp_path / "grafana"
    shutil.copytree(GRAFANA, copy, ignore=shutil.ignore_patterns("__pycache__"))
    edited = copy / "dashboards" / "json" / "bus.json"
    edited.write_text(edited.read_text().replace('"title": "Peers"', '"title": "Peers (edited in the UI)"'))
    stale = check_exit_code(tmp_path)
    assert stale.returncode == 1, stale.stdout + stale.stderr
    assert "bus.json" in stale.stderr and "Peers (edited in the UI)" in stale.stderr


def test_generated_json_is_stable() -> None:
    for path in JSON_FILES:
        text = path.read_text(encoding="utf-8")
        assert text == generate.dump_json(load(path)), f"{path.name}: not sorted, indented JSON"
        assert text.endswith("}\n")


def test_every_dashboard_module_has_committed_json() -> None:
    assert [p.name for p in JSON_FILES] == sorted(DASHBOARDS)


# --- dashboards -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_identity(name: str) -> None:
    board = load(generate.JSON_DIR / name)
    assert board.get("uid", "").startswith("algo-") and len(board["uid"]) <= 40
    assert board.get("title", "").strip()
    assert "algo" in board.get("tags", [])


def test_dashboard_uids_and_titles_are_unique() -> None:
    boards = [board for _, board in dashboards()]
    assert len({b["uid"] for b in boards}) == len(boards)
    assert len({b["title"] for b in boards}) == len(boards)


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_query_uses_the_provisioned_datasource(name: str) -> None:
    board, uid = load(generate.JSON_DIR / name), datasource_uid()
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel.get("datasource") == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"]) == panel["datasource"], panel["title"]
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            assert variable["datasource"] == {"type": "prometheus", "uid": uid}, variable["name"]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_query_reads_catalogued_metrics(name: str) -> None:
    known = known_metrics(METRICS_MD)
    for where, expr in queries(load(generate.JSON_DIR / name)):
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        assert names <= known, f"{where}: not in docs/METRICS.md: {sorted(names - known)}"


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panels_have_ids_refids_and_fit_the_grid(name: str) -> None:
    board = load(generate.JSON_DIR / name)
    ids = [panel["id"] for panel in panels(board)]
    assert len(set(ids)) == len(ids) and min(ids) >= 1
    for panel in panels(board):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        ref_ids = [t["refId"] for t in panel.get("targets", [])]
        assert len(set(ref_ids)) == len(ref_ids) and all(ref_ids), panel["title"]


def test_engine_dashboard_is_templated_by_engine() -> None:
    board = load(generate.JSON_DIR / "engine.json")
    assert [v["name"] for v in board["templating"]["list"]] == ["engine"]
    exprs = [expr for where, expr in queries(board) if where.startswith("panel")]
    assert exprs and all("$engine" in expr for expr in exprs)


# --- provisioning ---------------------------------------------------------------------------------------

def test_provisioning_yaml_parses() -> None:
    files = sorted(PROVISIONING.rglob("*.yml"))
    assert {p.relative_to(PROVISIONING).as_posix() for p in files} >= {
        "datasources/prometheus.yml", "dashboards/algo.yml", "alerting/contact-points.yml",
        "alerting/notification-policies.yml", "alerting/algo-rules.yml"}
    for path in files:
        assert load(path)["apiVersion"] == 1, path


def test_datasource_is_the_local_prometheus() -> None:
    (source,) = load(PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    assert source["uid"] == "algo-prometheus" and source["type"] == "prometheus"
    assert source["url"] == "http://127.0.0.1:9090"


def test_dashboard_provider_reads_the_installed_json() -> None:
    (provider,) = load(PROVISIONING / "dashboards" / "algo.yml")["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/algo"
    assert provider["folder"] == FOLDER


def test_every_severity_routes_to_a_contact_point() -> None:
    contact_points = {cp["name"] for cp in load(PROVISIONING / "alerting" / "contact-points.yml")["contactPoints"]}
    (root,) = load(PROVISIONING / "alerting" / "notification-policies.yml")["policies"]
    assert root["receiver"] in contact_points
    routed = {}
    for route in root["routes"]:
        assert route["receiver"] in contact_points
        for label, op, value in route["object_matchers"]:
            if label == "severity" and op == "=":
                routed[value] = route["receiver"]
    severities = {rule["labels"]["severity"] for group in load(generate.RULES)["groups"] for rule in group["rules"]
                  if "alert" in rule}
    assert severities <= routed.keys()
    assert routed["page"] != routed["ticket"]


def test_grafana_rules_mirror_the_prometheus_rules() -> None:
    prometheus = load(generate.RULES)
    provisioned = load(generate.GRAFANA_RULES)
    assert provisioned == grafana_rules(prometheus)
    uid = datasource_uid()
    alerts = {r["alert"]: r for g in prometheus["groups"] for r in g["rules"] if "alert" in r}
    rules = {r["title"]: r for g in provisioned["groups"] for r in g["rules"]}
    assert rules.keys() == alerts.keys()
    for name, rule in rules.items():
        source = alerts[name]
        assert rule["labels"] == source["labels"] and rule["for"] == source.get("for", "0s")
        assert rule["annotations"].keys() == source["annotations"].keys()
        query = next(d for d in rule["data"] if d["refId"] == "A")
        assert query["datasourceUid"] == uid
        assert query["model"]["expr"] == " ".join(source["expr"].split())
    assert len({r["uid"] for r in rules.values()}) == len(rules)
    assert all(len(r["uid"]) <= 40 for r in rules.values())
