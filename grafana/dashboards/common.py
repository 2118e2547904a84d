"""Shared pieces of the fleet's dashboards: the datasource, panel helpers and the final JSON pass.

Every panel queries the provisioned Prometheus datasource by its fixed uid, so dashboards work on any
Grafana that ran grafana/provisioning/ and need no `${DS_...}` import step.
"""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DashboardLinkType,
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
)

__all__ = [
    "DATASOURCE", "DATASOURCE_UID", "JOB", "RATE", "base", "finish", "query", "stat_panel", "timeseries_panel",
]

DATASOURCE_UID = "algo-prometheus"  # grafana/provisioning/datasources/prometheus.yml
DATASOURCE = DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
JOB = 'job="algo"'  # every daemon is scraped under this job (grafana/prometheus/prometheus.yml)
RATE = "$__rate_interval"


def query(expr: str, legend: str = "", *, instant: bool = False) -> prometheus.Dataquery:
    """One PromQL target; `legend` is Grafana's legend format (`{{daemon}}`)."""
    target = prometheus.Dataquery().expr(expr).datasource(DATASOURCE)
    if legend:
        target = target.legend_format(legend)
    return target.instant() if instant else target.range()


def _thresholds(steps: Sequence[tuple[float | None, str]]) -> dashboard.ThresholdsConfig:
    return (dashboard.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE)
            .steps([Threshold(value=value, color=color) for value, color in steps]))


def timeseries_panel(title: str, description: str, targets: Sequence[prometheus.Dataquery], *, unit: str = "short",
                     w: int = 12, h: int = 8, min_value: float | None = None,
                     thresholds: Sequence[tuple[float | None, str]] | None = None,
                     stacked: bool = False) -> timeseries.Panel:
    """A time series panel; `thresholds` are also drawn as dashed lines (the alert's threshold)."""
    panel = (timeseries.Panel().title(title).description(description).datasource(DATASOURCE)
             .targets(list(targets)).unit(unit).span(w).height(h).fill_opacity(10).line_width(1)
             .legend(common_builders.VizLegendOptions().show_legend(True)
                     .display_mode(common_models.LegendDisplayMode.LIST)
                     .placement(common_models.LegendPlacement.BOTTOM)))
    if min_value is not None:
        panel = panel.min(min_value)
    if thresholds:
        panel = (panel.thresholds(_thresholds(thresholds))
                 .thresholds_style(common_builders.GraphThresholdsStyleConfig()
                                   .mode(common_models.GraphThresholdsStyleMode.DASHED)))
    if stacked:
        panel = panel.stacking(common_builders.StackingConfig().mode(common_models.StackingMode.NORMAL))
    return panel


def stat_panel(title: str, description: str, targets: Sequence[prometheus.Dataquery], *, unit: str = "short",
               w: int = 6, h: int = 4, thresholds: Sequence[tuple[float | None, str]] = ((None, "green"),),
               mappings: dict[str, tuple[str, str]] | None = None, graph: bool = False) -> stat.Panel:
    """A stat panel showing the last value; `mappings` turn values into words (`{"1": ("UP", "green")}`)."""
    panel = (stat.Panel().title(title).description(description).datasource(DATASOURCE).targets(list(targets))
             .unit(unit).span(w).height(h).thresholds(_thresholds(thresholds))
             .color_mode(common_models.BigValueColorMode.BACKGROUND)
             .graph_mode(common_models.BigValueGraphMode.AREA if graph else common_models.BigValueGraphMode.NONE)
             .text_mode(common_models.BigValueTextMode.AUTO)
             .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))
    if mappings:
        panel = panel.mappings([ValueMap(options={
            value: ValueMappingResult(text=text, color=color, index=i)
            for i, (value, (text, color)) in enumerate(sorted(mappings.items()))
        })])
    return panel


def base(title: str, uid: str, description: str, *, tags: Sequence[str] = ()) -> dashboard.Dashboard:
    """A dashboard with the fleet's defaults: IST, last 6 hours, 30 s refresh, shared crosshair."""
    return (dashboard.Dashboard(title).uid(uid).description(description).tags(["algo", *tags])
            .timezone("Asia/Kolkata").time("now-6h", "now").refresh("30s").editable()
            .tooltip(DashboardCursorSync.CROSSHAIR)
            .link(dashboard.DashboardLink("Algo fleet").type(DashboardLinkType.DASHBOARDS).tags(["algo"])
                  .as_dropdown(True).include_vars(False).keep_time(True)))


def finish(board: dashboard.Dashboard) -> dict[str, Any]:
    """The dashboard as plain JSON data, with stable panel ids (1, 2, ... in order) and refIds (A, B, ...)."""
    data: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    next_id = 1
    for panel in data.get("panels", []):
        for p in [panel, *panel.get("panels", [])]:
            p["id"] = next_id
            next_id += 1
            for letter, target in zip(string.ascii_uppercase, p.get("targets", []), strict=False):
                target["refId"] = letter
    return data
