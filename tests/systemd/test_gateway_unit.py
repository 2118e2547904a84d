"""algo-gateway under its real unit: it starts under the hardening (Unix sockets only, its own network
namespace, the pepper as a credential), serves its socket to the fleet's group, audits in journald
with ACTOR=, and stops cleanly."""

from __future__ import annotations

import json
import sys

import pytest

from daemons.algoctl.sandbox import Sandbox
from tests.systemd.scheduling import cpu_weight

pytestmark = pytest.mark.systemd

ALGOCTL = sys.prefix + "/bin/algoctl"
SOCKET = "/run/algo-gateway/api.sock"
CLIENT = """
import json, sys, httpx
sock, method, path, token, body = sys.argv[1:6]
with httpx.Client(transport=httpx.HTTPTransport(uds=sock), base_url="http://gateway", timeout=10) as c:
    r = c.request(method, path, headers={"Authorization": "Bearer " + token} if token else {},
                  json=json.loads(body) if body else None)
print(json.dumps({"status": r.status_code, "body": r.json()}))
"""


def api(box: Sandbox, method: str, path: str, token: str = "", body: object = None) -> tuple[int, object]:
    out = box.run(sys.executable, "-c", CLIENT, SOCKET, method, path, token, json.dumps(body) if body is not None else "")
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    return answer["status"], answer["body"]


def test_the_gateway_unit_serves_audits_and_stops(sandbox: Sandbox) -> None:
    tokens = {}
    for role in ("viewer", "operator"):
        out = sandbox.run(ALGOCTL, "gateway", "token", "add", f"{role}-1", "--role", role)
        assert out.returncode == 0, out.stderr
        tokens[role] = out.stdout.splitlines()[0]
    sandbox.systemctl("start", "algo-gateway.service", check=True)  # Type=notify: returns at READY=1
    assert sandbox.show("algo-gateway.service", "ActiveState")["ActiveState"] == "active"
    assert cpu_weight(sandbox, "algo-gateway.service") == 25  # behind the whole fleet (tests/systemd/test_lifecycle.py)
    mode = sandbox.run("stat", "-c", "%a %G", SOCKET, "/run/algo-gateway").stdout.split("\n")
    assert mode[:2] == ["660 algo", "750 algo"]

    assert api(sandbox, "GET", "/api/v1/fleet")[0] == 401
    status, fleet = api(sandbox, "GET", "/api/v1/fleet", tokens["viewer"])
    assert status == 200 and isinstance(fleet, dict) and fleet["bus_connected"] is True
    assert api(sandbox, "POST", "/api/v1/kill-switch", tokens["viewer"], {"engage": True, "reason": "no"})[0] == 403
    status, sent = api(sandbox, "POST", "/api/v1/kill-switch", tokens["operator"], {"engage": False, "reason": "drill"})
    assert status == 202 and isinstance(sent, dict)

    audit = sandbox.journalctl("-u", "algo-gateway.service", "ACTOR=operator-1", "-o", "verbose").stdout
    assert "RESULT=sent" in audit and f"TRACE_ID={sent['trace']}" in audit and "ROLE=operator" in audit
    assert "RESULT=forbidden: needs operator" in sandbox.journalctl("ACTOR=viewer-1", "-o", "verbose").stdout

    sandbox.systemctl("stop", "algo-gateway.service", check=True)
    shown = sandbox.show("algo-gateway.service", "Result", "ExecMainStatus")
    assert shown == {"Result": "success", "ExecMainStatus": "0"}
    log = sandbox.journalctl("-u", "algo-gateway.service", "-o", "verbose").stdout
    assert all(token not in log for token in tokens.values())
