"""algo-gateway as a process: its socket, lifecycle, roles, REST, OpenAPI and the WebSocket stream,
against a real broker (tests/gateway_fleet.py). nginx in front: tests/test_gateway_nginx.py."""

from __future__ import annotations

import json
import re
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, unix_connect

from daemons.control_plane.store import Store
from daemons.gateway.api import create_app
from daemons.gateway.main import GatewayDaemon
from daemons.gateway.ratelimit import FailureLimiter, Limited
from daemons.gateway.stream import Stream
from daemons.gateway.tokens import Role, TokenError, TokenStore
from daemons.journal_format.layout import day_of
from daemons.runtime.config import load_config
from daemons.runtime.envelope import EXECUTION_FILL, HEALTH_HEARTBEAT, STRATEGY_SIGNAL, Event
from daemons.runtime.metrics import DaemonMetrics
from tests.gateway_fleet import GatewayFleet, gateway_fleet, write_day
from tests.helpers import wait_until


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayFleet]:
    with gateway_fleet(tmp_path_factory.mktemp("gw"), ring_events=64) as f:
        yield f


@contextmanager
def ws(fleet: GatewayFleet, first: dict[str, Any] | None = None, **kwargs: Any) -> Iterator[ClientConnection]:
    with unix_connect(str(fleet.api_socket), "ws://gateway/ws/events", open_timeout=10, **kwargs) as conn:
        if first is not None:
            conn.send(json.dumps(first))
        yield conn


def receive(conn: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(conn.recv(timeout=10))
    return message


def events_until(conn: ClientConnection, fill_id: str) -> list[dict[str, Any]]:
    """Stream messages up to the fill with ``fill_id``."""
    out = []
    while True:
        out.append(receive(conn))
        if out[-1].get("event", {}).get("payload", {}).get("fill_id") == fill_id:
            return out


def scrape(fleet: GatewayFleet) -> dict[str, float]:
    text = fleet.http().get("/metrics").text
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line.startswith("algo_")}


def dropped(metrics: dict[str, float]) -> float:
    return sum(metrics[f'algo_gateway_ws_dropped_total{{reason="{r}"}}'] for r in ("queue_full", "send_timeout"))


def test_ready_only_once_the_socket_accepts_and_the_watchdog_is_fed(fleet: GatewayFleet) -> None:
    # the fixture returned at READY=1: a connect must succeed at once
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(fleet.api_socket))
    assert any("READY=1" in m for m in fleet.notify.messages)
    fleet.notify.wait_for("WATCHDOG=1")


def test_every_route_refuses_a_missing_or_wrong_token(fleet: GatewayFleet) -> None:
    schema = fleet.http().get("/api/v1/openapi.json").json()
    public = {("/api/v1/session", "post"), ("/api/v1/session", "delete")}
    checked = 0
    for path, methods in schema["paths"].items():
        for method in methods:
            if (path, method) in public:
                continue
            for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic eDp5"}):
                r = fleet.http().request(method, path, headers=headers, json={})
                assert r.status_code == 401, (method, path, headers, r.text)
                assert r.headers["www-authenticate"] == "Bearer"
            checked += 1
    assert checked >= 7


def test_the_openapi_schema_documents_every_route_with_typed_responses(fleet: GatewayFleet) -> None:
    schema = fleet.http().get("/api/v1/openapi.json").json()
    app = create_app(GatewayDaemon(load_config(fleet.config_path), DaemonMetrics("gateway")))
    paths = [(getattr(r, "path", ""), getattr(r, "methods", ())) for r in app.routes]
    routes = {(p, m.lower()) for p, ms in paths if p.startswith("/api/v1/") and not p.endswith("openapi.json") for m in ms}
    documented = {(p, m) for p, ms in schema["paths"].items() for m in ms}
    assert routes == documented and len(routes) >= 8
    for (path, method) in documented:
        op = schema["paths"][path][method]
        ok = next(code for code in op["responses"] if code.startswith("2"))
        if ok == "204":
            continue
        body = op["responses"][ok]["content"]["application/json"]["schema"]
        assert "$ref" in body or "$ref" in body.get("items", {}), (path, method, body)
        assert set(op["responses"]) >= {"401"} if path != "/api/v1/session" else True
    assert set(schema["components"]["schemas"]) >= {"FleetStatus", "Order", "Fill", "Position", "Pnl",
                                                    "KillSwitchRequest", "KillSwitchSent", "StrategyOut", "StrategyCreate",
                                                    "ParamsChange", "CommandRequest", "CommandOut"}


def test_roles_viewer_reads_operator_acts_and_both_are_audited(fleet: GatewayFleet) -> None:
    assert fleet.http("viewer").get("/api/v1/whoami").json() == {"name": "viewer-1", "role": "viewer"}
    denied = fleet.http("viewer").post("/api/v1/kill-switch", json={"engage": True, "reason": "viewer tries"})
    assert denied.status_code == 403 and "needs operator" in denied.json()["detail"]
    invalid = fleet.http("operator").post("/api/v1/kill-switch", json={"engage": True})
    assert invalid.status_code == 422 and invalid.json()["detail"][0]["loc"] == ["body", "reason"]
    assert fleet.http("viewer").get("/api/v1/fleet").json()["kill_switch"] is None  # nothing reached the bus

    sent = fleet.http("operator").post("/api/v1/kill-switch", json={"engage": True, "reason": "drill"})
    assert sent.status_code == 202
    trace = sent.json()["trace"]
    # through the real broker and back: the gateway hears its own control.kill_switch
    state = wait_until(lambda: fleet.http("viewer").get("/api/v1/fleet").json()["kill_switch"], 10, "the kill switch")
    assert state["engaged"] and state["trace"] == trace and state["reason"] == "drill (operator-1 via gateway)"
    store = fleet.store()
    try:  # in the control plane's audit too, written after the answer
        row = wait_until(lambda: [a for a in store.audit() if a.action == "kill_switch"], 10, "the audit row")[0]
    finally:
        store.close()
    assert row.actor == "operator-1" and row.detail == {"engage": True, "reason": "drill", "trace": trace}
    fleet.http("admin").post("/api/v1/kill-switch", json={"engage": False, "reason": "drill over"}).raise_for_status()
    wait_until(lambda: not fleet.http().get("/api/v1/fleet", headers={
        "Authorization": f"Bearer {fleet.tokens['viewer']}"}).json()["kill_switch"]["engaged"], 10, "the release")


def test_fleet_status_from_heartbeats(fleet: GatewayFleet) -> None:
    fleet.publish(HEALTH_HEARTBEAT, {"v": 1, "unit": "algo-fno", "host": "elsewhere", "pid": 42, "uptime_sec": 3.0,
                                     "interval_sec": 1.0, "healthy": False, "reason": "feed stalled",
                                     "loop_lag_sec": 0.0, "tick_age_sec": 12.5})

    def fno_elsewhere() -> dict[str, Any] | None:
        daemons = fleet.http("viewer").get("/api/v1/fleet").json()["daemons"]
        return next((d for d in daemons if d["host"] == "elsewhere"), None)

    fno = wait_until(fno_elsewhere, 10, "the heartbeat from another host")
    assert fno is not None
    assert fno["unit"] == "algo-fno" and fno["state"] == "alive" and fno["healthy"] is False
    assert fno["reason"] == "feed stalled" and fno["pid"] == 42 and not fno["expected"]
    status = fleet.http("viewer").get("/api/v1/fleet").json()
    mine = {d["unit"]: d for d in status["daemons"] if d["host"] == status["host"]}
    assert mine["algo-gateway"]["state"] == "alive" and mine["algo-gateway"]["healthy"] is True
    assert mine["algo-risk"]["expected"] and mine["algo-risk"]["state"] in ("waiting", "silent")  # not running here
    assert status["bus_connected"] is True


def test_orders_fills_positions_and_pnl_from_the_journal(fleet: GatewayFleet) -> None:
    day = day_of(1_796_400_000 * 10**9).isoformat()
    write_day(fleet.config.daemons.journal.directory, day)
    http = fleet.http("viewer")
    orders = http.get("/api/v1/orders", params={"day": day}).json()
    assert [(o["client_id"], o["status"]) for o in orders] == [("c1", "COMPLETE"), ("c2", "COMPLETE"), ("c3", "REJECTED")]
    fills = http.get("/api/v1/fills", params={"day": day}).json()
    assert [(f["fill_id"], f["price"]) for f in fills] == [("f1", "100"), ("f2", "110")]
    [position] = http.get("/api/v1/positions", params={"day": day}).json()
    assert position == {"engine": "equity", "strategy": "rsi-infy", "symbol": "INFY", "quantity": 6,
                        "average": 100.0, "mark": 110.0, "unrealised": 60.0}
    pnl = http.get("/api/v1/pnl", params={"day": day}).json()
    assert (pnl["realised"], pnl["unrealised"], pnl["gross_pnl"]) == (40.0, 60.0, 100.0)
    assert pnl["by_strategy"]["rsi-infy"]["fills"] == 2
    assert http.get("/api/v1/orders", params={"day": "2001-01-01"}).status_code == 404
    assert http.get("/api/v1/orders", params={"day": "yesterday"}).status_code == 422


def test_websocket_needs_a_token_and_a_same_origin(fleet: GatewayFleet) -> None:
    with ws(fleet, {"topics": ["execution.*"]}) as conn, pytest.raises(ConnectionClosed) as closed:
        conn.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    with ws(fleet, {"token": "wrong", "topics": ["execution.*"]}) as conn, pytest.raises(ConnectionClosed):
        conn.recv(timeout=10)
    with pytest.raises(InvalidStatus) as refused, ws(fleet, additional_headers={"Origin": "https://evil.example"}):
        pass
    assert refused.value.response.status_code == 403
    # the page's own origin, and the session cookie instead of a first-message token
    cookie = fleet.http().post("/api/v1/session", json={"token": fleet.tokens["viewer"]})
    assert cookie.status_code == 204
    set_cookie = cookie.headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "Secure" in set_cookie and "SameSite=strict" in set_cookie
    assert fleet.http().post("/api/v1/session", json={"token": "wrong"}).status_code == 401
    headers = {"Origin": "https://gateway", "Cookie": set_cookie.split(";")[0]}
    with ws(fleet, {"topics": ["execution.fill"]}, additional_headers=headers) as conn:
        assert receive(conn)["type"] == "subscribed"


def test_websocket_streams_subscribed_topics_with_sequence_numbers_and_resumes(fleet: GatewayFleet) -> None:
    token = fleet.tokens["viewer"]
    with ws(fleet, {"token": token, "topics": ["execution.*"]}) as conn:
        subscribed = receive(conn)
        assert subscribed["type"] == "subscribed" and subscribed["topics"] == ["execution.*"]
        fleet.publish(STRATEGY_SIGNAL, {"n": 1})  # not subscribed
        fleet.publish(EXECUTION_FILL, {"fill_id": "ws-1"})
        fleet.publish(EXECUTION_FILL, {"fill_id": "ws-2"})
        got = [m for m in events_until(conn, "ws-2") if m["type"] == "event"]
    assert [m["event"]["payload"]["fill_id"] for m in got] == ["ws-1", "ws-2"]
    assert {m["topic"] for m in got} == {"execution.fill"}
    first, second = got[0]["seq"], got[1]["seq"]
    assert second > first > subscribed["seq"]

    fleet.publish(EXECUTION_FILL, {"fill_id": "ws-3"})  # while nobody listens
    with ws(fleet, {"token": token, "topics": ["execution.fill"], "since": first}) as conn:
        assert receive(conn)["type"] == "subscribed"
        resumed = [m for m in events_until(conn, "ws-3") if m["type"] == "event"]
    assert [m["event"]["payload"]["fill_id"] for m in resumed] == ["ws-2", "ws-3"]
    assert resumed[0]["seq"] == second

    with ws(fleet, {"token": token, "topics": ["execution.fill"]}) as live:
        assert receive(live)["type"] == "subscribed"
        for n in range(80):  # more than the ring (64) holds
            fleet.publish(STRATEGY_SIGNAL, {"n": n})
        fleet.publish(EXECUTION_FILL, {"fill_id": "ws-4"})
        events_until(live, "ws-4")  # streamed: the ring has taken the 80 before it (resuming earlier raced them)
    with ws(fleet, {"token": token, "topics": ["execution.fill"], "since": first}) as conn:
        assert receive(conn)["type"] == "subscribed"
        gap, *rest = events_until(conn, "ws-4")
    assert gap["type"] == "gap" and gap["since"] == first and gap["resumed_at"] > second
    assert [m["event"]["payload"]["fill_id"] for m in rest] == ["ws-4"]  # ws-2, ws-3 fell out of the ring


def test_a_bad_subscription_is_refused(fleet: GatewayFleet) -> None:
    with ws(fleet, {"token": fleet.tokens["viewer"], "topics": ["no spaces"]}) as conn, \
            pytest.raises(ConnectionClosed) as closed:
        conn.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008 and "topics" in closed.value.rcvd.reason


def test_a_stalled_browser_is_dropped_and_the_others_and_the_bus_do_not_wait(fleet: GatewayFleet) -> None:
    token = fleet.tokens["viewer"]
    before = scrape(fleet)
    tiny = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tiny.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    tiny.connect(str(fleet.api_socket))
    # max_queue=1: the client's reader stops reading once one message waits, so the gateway's sends block
    stalled = unix_connect(sock=tiny, uri="ws://gateway/ws/events", compression=None, max_queue=1, legacy=True)
    stalled.send(json.dumps({"token": token, "topics": ["execution.fill"]}))
    with ws(fleet, {"token": token, "topics": ["execution.fill"]}) as fast:
        assert receive(fast)["type"] == "subscribed"
        blob = "x" * 20_000
        for n in range(300):  # ~6 MB for the stalled one: far past its queue and every socket buffer
            fleet.publish(EXECUTION_FILL, {"fill_id": f"big-{n}", "blob": blob})
        got = [m for m in events_until(fast, "big-299") if m["type"] == "event"]
    assert [m["event"]["payload"]["fill_id"] for m in got] == [f"big-{n}" for n in range(300)]
    wait_until(lambda: dropped(scrape(fleet)) > dropped(before), 20, "the stalled client dropped")
    after = scrape(fleet)
    # the bus client lost nothing and stayed connected
    for reason in ("outbox_full", "undecodable", "conflated"):
        assert after[f'algo_bus_client_dropped_total{{reason="{reason}"}}'] == 0
    assert after["algo_bus_client_connected"] == 1
    assert after["algo_gateway_ws_clients"] == 0
    stalled.close_socket()


def test_the_gateway_exports_its_catalogue(fleet: GatewayFleet) -> None:
    from tests.systemd.test_metrics_catalogue import catalogue

    text = fleet.http().get("/metrics").text
    types = {m[1]: m[2] for m in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.M)}
    own = {name: kind for name, kind in types.items() if name.startswith("algo_gateway_")}
    assert own == catalogue("algo-gateway")
    shared = catalogue()
    assert {name: shared.get(name) for name in types.keys() - own.keys()} == {n: types[n] for n in types.keys() - own.keys()}


def test_token_file_holds_digests_only_and_changes_apply_without_restart(fleet: GatewayFleet) -> None:
    stored = fleet.config.gateway.tokens.read_text()
    assert all(token not in stored for token in fleet.tokens.values())
    pepper = (fleet.root / "creds" / "gateway_pepper").read_text().strip()
    store = TokenStore(fleet.config.gateway.tokens, pepper.encode())
    fresh = store.add("late-1", Role.viewer)
    assert fleet.http().get("/api/v1/whoami", headers={"Authorization": f"Bearer {fresh}"}).status_code == 200
    store.remove("late-1")
    assert fleet.http().get("/api/v1/whoami", headers={"Authorization": f"Bearer {fresh}"}).status_code == 401
    assert TokenStore(fleet.config.gateway.tokens, b"another pepper 16b").authenticate(fleet.tokens["admin"]) is None
    with pytest.raises(TokenError, match="exists"):
        store.add("admin-1", Role.admin)


def test_the_kill_switch_is_refused_not_queued_while_the_bus_is_down(fleet: GatewayFleet) -> None:
    """Second to last: it stops the fixture's broker."""
    broker = fleet.procs[0]
    broker.terminate()
    broker.wait(20)
    wait_until(lambda: not fleet.http("viewer").get("/api/v1/fleet").json()["bus_connected"], 10, "the bus gone")
    refused = fleet.http("operator").post("/api/v1/kill-switch", json={"engage": True, "reason": "bus down"})
    assert refused.status_code == 503 and "nothing was sent" in refused.json()["detail"]


def test_sigterm_stops_cleanly_and_no_token_was_ever_logged(fleet: GatewayFleet) -> None:
    """Last in this module: it stops the fixture's gateway."""
    fleet.gateway.send_signal(signal.SIGTERM)
    fleet.notify.wait_for("STOPPING=1")
    assert fleet.gateway.wait(20) == 0
    assert not fleet.api_socket.exists()
    log = fleet.stderr()
    assert all(token not in log for token in fleet.tokens.values())
    audit = [line for line in log.splitlines() if "audit:" in line]
    assert any("ACTOR=operator-1" in line and "RESULT=sent" in line and "drill" in line for line in audit), audit
    assert any("ACTOR=viewer-1" in line and "RESULT=forbidden: needs operator" in line for line in audit), audit
    assert any("ACTOR=(unauthenticated)" in line for line in audit), audit
    assert any("RESULT=failed: bus unreachable" in line and "bus down" in line for line in audit), audit
    assert any("ACTOR=viewer-1" in line and "RESULT=session cookie set" in line for line in audit), audit


def test_no_pepper_is_a_config_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "fleet.toml"
    config.write_text(f'[gateway]\nsocket = "{tmp_path}/api.sock"\n')
    result = subprocess.run([sys.executable, "-m", "daemons.gateway", "--config", str(config)], capture_output=True,
                            text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 78, result.stderr
    assert "gateway.pepper: required" in result.stderr and not (tmp_path / "api.sock").exists()


def test_failed_logins_are_limited_per_client_and_per_token_prefix(tmp_path: Path) -> None:
    """After the module's fleet has stopped: a fleet of its own (the broker's metrics port is fixed)."""
    with gateway_fleet(tmp_path, failed_logins_burst=3, failed_logins_per_minute=0.01) as f:
        http = f.http()

        def fleet_as(token: str | None, client: str) -> int:
            auth = {"Authorization": f"Bearer {token}"} if token else {}
            return http.get("/api/v1/fleet", headers={**auth, "X-Real-IP": client}).status_code

        assert [fleet_as(f"wrong-{i}-token", "203.0.113.7") for i in range(3)] == [401, 401, 401]
        limited = http.get("/api/v1/fleet", headers={"Authorization": f"Bearer {f.tokens['viewer']}",
                                                     "X-Real-IP": "203.0.113.7"})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1  # refused before the check
        assert http.post("/api/v1/session", json={"token": f.tokens["viewer"]},
                         headers={"X-Real-IP": "203.0.113.7"}).status_code == 429  # the console's login too
        assert fleet_as(f.tokens["viewer"], "203.0.113.8") == 200  # another client is not held back
        assert [fleet_as(None, "203.0.113.9") for _ in range(5)] == [401] * 5  # no token: no failed login
        # one token prefix tried from many addresses
        assert [fleet_as(f"samepref-{i}", f"198.51.100.{i}") for i in range(4)] == [401, 401, 401, 429]
        metrics = scrape(f)
        assert metrics['algo_gateway_login_limited_total{by="client"}'] == 2
        assert metrics['algo_gateway_login_limited_total{by="token"}'] == 1
    audit = [line for line in f.stderr().splitlines() if "rate limited" in line]
    assert len(audit) == 2, audit  # once per window, not per refused request
    assert "203.0.113.7" in audit[0] and '"limit":"client"' in audit[0] and "ACTOR=(unauthenticated)" in audit[0]
    assert all(token not in line for line in audit for token in f.tokens.values())


def test_the_failure_buckets_refill_and_stay_bounded() -> None:
    now = [0.0]
    limiter = FailureLimiter(2, 60.0, max_keys=3, clock=lambda: now[0])
    keys = limiter.keys("203.0.113.7", "abcdefgh-rest")
    assert keys == (("client", "203.0.113.7"), ("token", "abcdefgh"))
    limiter.failed(keys)
    limiter.failed(keys)
    assert limiter.check(keys) == Limited("client", 1, first=True)
    assert limiter.check(keys) == Limited("client", 1, first=False)
    now[0] = 1.0  # one failure refilled at 60 a minute
    assert limiter.check(keys) is None
    for i in range(10):
        limiter.failed([("client", f"198.51.100.{i}")])
    assert len(limiter.buckets) == 3


def test_without_its_database_the_gateway_serves_and_its_strategy_routes_answer_503(tmp_path: Path) -> None:
    """Last: a fleet of its own, with no control-plane database (not yet deployed, or not migrated)."""
    with gateway_fleet(tmp_path, seed=False) as f:
        assert f.http("viewer").get("/api/v1/fleet").status_code == 200
        listed = f.http("viewer").get("/api/v1/strategies")
        assert listed.status_code == 503 and "schema revision none" in listed.json()["detail"]
        queued = f.http("operator").post("/api/v1/strategies/ema-nifty/commands", json={"verb": "pause"})
        assert queued.status_code == 503 and "nothing was written" in queued.json()["detail"]
        assert f.http("operator").post("/api/v1/kill-switch", json={"engage": False, "reason": "x"}).status_code == 202
        assert scrape(f)["algo_gateway_control_plane_unavailable_total"] >= 2
        Store.open(f.config.control_plane.database_url, migrate=True).close()  # the deploy migrates: it comes back
        assert f.http("viewer").get("/api/v1/strategies").json() == []


def test_a_client_resuming_across_a_gateway_restart_gets_a_gap(monkeypatch: pytest.MonkeyPatch) -> None:
    """The restarted gateway's ring is empty and knows nothing of the numbers the console saw: the console
    must be told to re-read, and get the new life's events, even once these outnumber the old life's."""
    def fill(fill_id: str) -> Event:
        return Event(EXECUTION_FILL, "algo-execution", 1, {"fill_id": fill_id}, fill_id, 0, fill_id)

    monkeypatch.setattr(time, "time_ns", lambda: 1_000_000_000)
    before = Stream(64, 64)
    for n in range(3):
        before.publish(fill(f"old-{n}"))
    monkeypatch.setattr(time, "time_ns", lambda: 2_000_000_000)  # started a second later
    after = Stream(64, 64)
    for n in range(5):
        after.publish(fill(f"new-{n}"))
    client = after.attach(("execution.*",), before.seq)
    messages = [json.loads(client.queue.get_nowait()) for _ in range(client.queue.qsize())]
    assert messages[0] == {"type": "gap", "since": before.seq, "resumed_at": after.first + 1}
    assert [m["event"]["payload"]["fill_id"] for m in messages[1:]] == [f"new-{n}" for n in range(5)]
    assert after.numbered == 5
