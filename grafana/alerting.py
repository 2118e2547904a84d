"""Grafana-managed copies of the Prometheus alert rules, for Grafana's notification policies.

Grafana's Alertmanager only notifies about rules Grafana evaluates itself; it cannot receive alerts
from Prometheus. So the rules in grafana/alerts/algo.rules.yml (the source, tested with promtool) are
converted into Grafana's alert-rule provisioning format: each rule queries the provisioned Prometheus
datasource with the same PromQL (instant), and fires for every series the query returns, with the same
`for`, labels and annotations. `severity` then routes it (provisioning/alerting/notification-policies.yml).
"""

from __future__ import annotations

import re
from typing import Any

from .dashboards.common import DATASOURCE_UID

__all__ = ["FOLDER", "grafana_rules", "rule_uid"]

FOLDER = "Algo fleet"  # the same folder as the dashboards (provisioning/dashboards/algo.yml)
_VALUE = re.compile(r"\$value\b")


def rule_uid(alertname: str) -> str:
    """A stable uid for a Grafana rule: `algo-` and the alert name in kebab case."""
    return "algo-" + re.sub(r"(?<!^)(?=[A-Z])", "-", alertname).lower()


def _template(text: str) -> str:
    # In Grafana's templates $value is every query's value as one string; $values.A.Value is query A's.
    return _VALUE.sub("$values.A.Value", text)


def _rule(rule: dict[str, Any]) -> dict[str, Any]:
    return {
        "uid": rule_uid(rule["alert"]),
        "title": rule["alert"],
        "condition": "FIRING",
        "data": [
            {
                "refId": "A",
                "relativeTimeRange": {"from": 600, "to": 0},
                "datasourceUid": DATASOURCE_UID,
                "model": {
                    "refId": "A",
                    "datasource": {"type": "prometheus", "uid": DATASOURCE_UID},
                    "expr": " ".join(rule["expr"].split()),
                    "instant": True,
                    "range": False,
                    "intervalMs": 15000,
                    "maxDataPoints": 43200,
                },
            },
            {
                # Every series the PromQL returns is an alert (as in Prometheus), whatever its value.
                "refId": "FIRING",
                "datasourceUid": "__expr__",
                "model": {
                    "refId": "FIRING",
                    "datasource": {"type": "__expr__", "uid": "__expr__"},
                    "type": "math",
                    "expression": "$A == $A",
                },
            },
        ],
        "for": rule.get("for", "0s"),
        "noDataState": "OK",  # no series: nothing is wrong (as in Prometheus)
        "execErrState": "Error",  # Prometheus unreachable: Grafana's DatasourceError alert, same labels
        "labels": dict(rule.get("labels", {})),
        "annotations": {key: _template(" ".join(str(value).split()))
                        for key, value in rule.get("annotations", {}).items()},
        "isPaused": False,
    }


def grafana_rules(prometheus_rules: dict[str, Any]) -> dict[str, Any]:
    """Grafana's alerting provisioning document for every alerting rule (recording rules stay in Prometheus)."""
    groups = []
    for group in prometheus_rules["groups"]:
        rules = [_rule(rule) for rule in group["rules"] if "alert" in rule]
        if rules:
            groups.append({"orgId": 1, "name": group["name"], "folder": FOLDER,
                           "interval": group.get("interval", "15s"), "rules": rules})
    return {"apiVersion": 1, "groups": groups}
