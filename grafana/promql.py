"""Which metrics a PromQL expression reads, and which metrics docs/METRICS.md says the fleet exports.

The tests use these to hold alert rules and dashboards to the metrics catalogue. The extractor is a
tokenizer, not a parser: it is exact for the PromQL this repository writes (selectors, functions,
aggregations with by/without, vector matching with on/ignoring, Grafana's $variables).
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["PROMETHEUS_OWN", "allowed_names", "catalogue", "known_metrics", "metric_names"]

# Words that stand where a metric name could, but are not one.
_KEYWORDS = frozenset({
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "offset", "atan2", "inf", "nan",
})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE)
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENTIFIER = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_LABEL_VALUES = re.compile(r"^\s*label_values\s*\((.*),\s*\w+\s*\)\s*$", re.DOTALL)
_ROW = re.compile(r"^\|\s*`(algo_[a-z0-9_]+)`\s*\|\s*(counter|gauge|histogram|summary)\s*\|")
PROMETHEUS_OWN = frozenset({"up"})  # series Prometheus writes itself for every target
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


def metric_names(expr: str) -> set[str]:
    """The metric names an expression (or a Grafana `label_values(...)` query) selects."""
    label_values = _LABEL_VALUES.match(expr)
    if label_values:
        expr = label_values.group(1)
    expr = _STRING.sub('""', expr)
    expr = _GRAFANA_VARIABLE.sub("1", expr)
    expr = _GROUPING.sub(" ", expr)
    expr = _MATCHERS.sub(" ", expr)
    expr = _RANGE.sub(" ", expr)
    names = set()
    for match in _IDENTIFIER.finditer(expr):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def catalogue(metrics_md: Path) -> dict[str, str]:
    """`{name: type}` for every `| \\`algo_...\\` | type |` row of docs/METRICS.md."""
    rows = {}
    for line in metrics_md.read_text(encoding="utf-8").splitlines():
        match = _ROW.match(line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def allowed_names(types: dict[str, str]) -> set[str]:
    """Every series name the catalogued metrics produce (a histogram's _bucket, _sum and _count)."""
    names = set()
    for name, kind in types.items():
        names.add(name)
        names.update(name + suffix for suffix in _SUFFIXES.get(kind, ()))
    return names


def known_metrics(metrics_md: Path) -> set[str]:
    """Every series name a query may read: the catalogue's metrics (with histogram series) and `up`."""
    return allowed_names(catalogue(metrics_md)) | PROMETHEUS_OWN
