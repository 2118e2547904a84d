"""The fleet's Grafana dashboards, built with grafana-foundation-sdk (one module per dashboard)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import bus, engine, execution, fleet

__all__ = ["DASHBOARDS"]

# file name (under grafana/dashboards/json/) -> function returning the dashboard as a JSON-able dict
DASHBOARDS: dict[str, Callable[[], dict[str, Any]]] = {
    "fleet-overview.json": fleet.build,
    "engine.json": engine.build,
    "bus.json": bus.build,
    "execution-risk.json": execution.build,
}
