"""docs/METRICS.md is the catalogue dashboards and alerts are written against: it must match
what the running fleet exports, name for name and type for type."""

from __future__ import annotations

import re
import urllib.request

import pytest

from daemons.algoctl.sandbox import Sandbox
from tests.conftest import REPO
from tests.helpers import wait_until

pytestmark = pytest.mark.systemd

PORTS = {"algo-bus": 9470, "algo-heartbeat": 9471, "algo-marketdata": 9472,
         "algo-fno": 9473, "algo-equity": 9474, "algo-options": 9475, "algo-risk": 9476,
         "algo-execution": 9477, "algo-journal": 9478, "algo-commander": 9481}


def exported(port: int) -> dict[str, str]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {m[1]: m[2] for m in re.finditer(r"^# TYPE (\S+) (\S+)$", body, re.M)}


def catalogue(section: str = "") -> dict[str, str]:
    """The rows of docs/METRICS.md's first table, which a paper fleet exports, or of the section headed
    ``### <section>``: "Live mode only" (tests/systemd/test_live.py), "algo-gateway" (tests/test_gateway.py)."""
    parts = re.split(r"^### ", (REPO / "docs" / "METRICS.md").read_text(), flags=re.M)
    text = next(p for p in parts[1:] if p.startswith(section)) if section else parts[0]
    rows = re.finditer(r"^\| `(algo_\w+)` \| (\w+) \|", text, re.M)
    return {m[1]: m[2] for m in rows}


def test_the_fleet_exports_exactly_the_catalogue(sandbox: Sandbox) -> None:
    sandbox.systemctl("start", "algo.target", check=True)
    for unit in PORTS:
        wait_until(lambda: sandbox.show(f"{unit}.service", "ActiveState")["ActiveState"] == "active", 15, unit)
    seen: dict[str, str] = {}
    for port in PORTS.values():
        seen.update(exported(port))
    assert all(name.startswith("algo_") for name in seen), [n for n in seen if not n.startswith("algo_")]
    assert seen == catalogue()
