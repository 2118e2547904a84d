"""The gateway's strategy and command routes on the control plane's database: roles, validation that
writes nothing, idempotent commands, operators racing, and the audit in the database and in journald.

The test stands in for the command executor (another daemon's job) with the store's own claim and finish.
"""

from __future__ import annotations

import itertools
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemons.algoctl import gateway
from daemons.control_plane.records import AuditView
from daemons.control_plane.store import Store
from daemons.control_plane.transitions import STRATEGY_TRANSITIONS, State
from daemons.gateway.control import ControlPlane, Unavailable
from tests.gateway_fleet import GatewayFleet, gateway_fleet


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayFleet]:
    tmp = tmp_path_factory.mktemp("gws")
    with gateway_fleet(tmp) as f:
        f.tokens["operator-2"] = gateway.add(f.config, "operator-2", "operator", tmp / "creds")
        yield f


@pytest.fixture
def store(fleet: GatewayFleet) -> Iterator[Store]:
    s = fleet.store()
    yield s
    s.close()


def fleet_store_audit(fleet: GatewayFleet, strategy: str) -> list[AuditView]:
    store = fleet.store()
    try:
        return store.audit(strategy)
    finally:
        store.close()


def execute_all(store: Store) -> None:
    """What the executor does: claim each pending command and report it executed."""
    while (command := store.claim("test-executor")) is not None:
        store.finish(command.id, "executed", None, "test-executor")


def test_viewers_read_operators_command_admins_create(fleet: GatewayFleet) -> None:
    listed = fleet.http("viewer").get("/api/v1/strategies").json()
    assert [s["name"] for s in listed] == ["ema-nifty", "rsi-infy", "rsi-reliance", "straddle-nifty"]
    one = fleet.http("viewer").get("/api/v1/strategies/rsi-infy").json()
    assert one["kind"] == "rsi_reversion" and one["engine"] == "equity" and one["desired_state"] == "running"
    assert one["params"]["symbol"] == "INFY" and one["version"] >= 1
    assert fleet.http("viewer").get("/api/v1/strategies/nope").status_code == 404
    assert fleet.http().get("/api/v1/strategies").status_code == 401
    assert fleet.http("viewer").post("/api/v1/strategies/rsi-infy/commands", json={"verb": "pause"}).status_code == 403
    assert fleet.http("viewer").patch("/api/v1/strategies/rsi-infy/params", json={"params": {"period": 10}}).status_code == 403
    new = {"name": "ema-tcs", "kind": "ema_crossover", "engine": "equity",
           "params": {"symbol": "TCS", "quantity": 1, "fast": 5, "slow": 20}}
    assert fleet.http("operator").post("/api/v1/strategies", json=new).status_code == 403
    assert fleet.http("viewer").get("/api/v1/commands").json() == []  # nothing reached the queue
    refused = [(a.actor, a.action, a.detail["reason"]) for a in fleet_store_audit(fleet, "rsi-infy") if a.actor != "deploy"]
    assert refused == [("viewer-1", "refused", "forbidden: needs operator")] * 2  # in the database too


@pytest.mark.parametrize(("body", "loc", "message"), [
    ({"kind": "no_such_kind"}, ["body", "kind"], "unknown strategy kind"),
    ({"engine": "bonds"}, ["body", "engine"], "unknown engine 'bonds'"),
    ({"name": "Bad Name"}, ["body", "name"], "pattern"),
    ({"params": {"symbol": "TCS", "quantity": 1, "fast": 30, "slow": 20}}, ["body", "params"], "need 0 < fast < slow"),
    ({"params": {"symbol": "TCS", "quantity": 1, "fast": 2**70, "slow": 20}}, ["body", "params", "fast"], "64 bits"),
    ({"colour": "red"}, ["body", "colour"], "Extra inputs"),
])
def test_an_invalid_strategy_is_422_naming_the_field_and_nothing_is_written(
        fleet: GatewayFleet, store: Store, body: dict[str, Any], loc: list[str], message: str) -> None:
    before = store.strategies()
    good = {"name": "ema-tcs", "kind": "ema_crossover", "engine": "equity",
            "params": {"symbol": "TCS", "quantity": 1, "fast": 5, "slow": 20}}
    refused = fleet.http("admin").post("/api/v1/strategies", json={**good, **body})
    assert refused.status_code == 422, refused.text
    [problem] = refused.json()["detail"]
    assert problem["loc"] == loc and message in problem["msg"], problem
    assert store.strategies() == before


def test_an_admin_creates_a_strategy_once_stopped_and_audited(fleet: GatewayFleet, store: Store) -> None:
    new = {"name": "ema-wipro", "kind": "ema_crossover", "engine": "equity",
           "params": {"symbol": "WIPRO", "quantity": 1, "fast": 5, "slow": 20}}
    created = fleet.http("admin").post("/api/v1/strategies", json=new)
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["desired_state"], body["version"], body["process"], body["auto_start"]) == ("stopped", 1, "engine", False)
    assert fleet.http("viewer").get("/api/v1/strategies/ema-wipro").json() == body
    again = fleet.http("admin").post("/api/v1/strategies", json=new)
    assert again.status_code == 409 and "exists" in again.json()["detail"]
    rows = [a for a in store.audit("ema-wipro")]
    assert [(a.actor, a.action) for a in rows] == [("admin-1", "created"), ("admin-1", "refused")]
    assert rows[0].detail["params"] == new["params"] and "exists" in rows[1].detail["reason"]


def test_a_command_is_queued_once_per_id_and_read_back_until_it_is_executed(fleet: GatewayFleet, store: Store) -> None:
    http = fleet.http("operator")
    first = http.post("/api/v1/strategies/ema-nifty/commands", json={"verb": "pause", "id": "pause-ema-1"})
    assert first.status_code == 202, first.text
    command = first.json()
    assert (command["id"], command["verb"], command["status"], command["actor"]) == ("pause-ema-1", "pause", "pending",
                                                                                     "operator-1")
    retry = http.post("/api/v1/strategies/ema-nifty/commands", json={"verb": "pause", "id": "pause-ema-1"})
    assert retry.status_code == 202 and retry.json() == command  # a retry, not a second command
    reused = http.post("/api/v1/strategies/ema-nifty/commands", json={"verb": "resume", "id": "pause-ema-1"})
    assert reused.status_code == 409 and "already pause ema-nifty" in reused.json()["detail"]
    assert http.post("/api/v1/strategies/ema-nifty/commands", json={"verb": "explode"}).status_code == 422
    assert http.post("/api/v1/strategies/ema-nifty/commands", json={"verb": "pause", "id": "no spaces"}).status_code == 422
    assert http.post("/api/v1/strategies/nope/commands", json={"verb": "pause"}).status_code == 404
    generated = http.post("/api/v1/strategies/rsi-reliance/commands", json={"verb": "stop"}).json()
    assert generated["id"].startswith("gw-") and generated["status"] == "pending"

    viewer = fleet.http("viewer")
    assert viewer.get("/api/v1/commands/pause-ema-1").json() == command
    assert viewer.get("/api/v1/commands/nope").status_code == 404
    assert [c["id"] for c in viewer.get("/api/v1/commands", params={"strategy": "ema-nifty"}).json()] == ["pause-ema-1"]
    assert [c["id"] for c in viewer.get("/api/v1/commands").json()][:2] == [generated["id"], "pause-ema-1"]

    execute_all(store)
    done = viewer.get("/api/v1/commands/pause-ema-1").json()
    assert done["status"] == "executed" and done["finished_at"] is not None
    assert viewer.get("/api/v1/strategies/ema-nifty").json()["desired_state"] == "paused"
    audit = [(a.actor, a.action, a.command_id) for a in store.audit("ema-nifty")]
    assert audit.count(("operator-1", "submitted", "pause-ema-1")) == 1
    assert ("test-executor", "executed", "pause-ema-1") in audit
    assert ("operator-1", "refused", "pause-ema-1") in audit  # the reused id
    assert store.audit("nope")[-1].action == "refused"


def test_new_parameters_are_judged_now_and_applied_when_executed(fleet: GatewayFleet, store: Store) -> None:
    http = fleet.http("operator")
    before = store.strategy("rsi-infy")
    assert before is not None
    bad = http.patch("/api/v1/strategies/rsi-infy/params", json={"params": {"period": 2**70}})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "params", "period"]
    unknown = http.patch("/api/v1/strategies/rsi-infy/params", json={"params": {"bogus": 1}})
    assert unknown.status_code == 422 and "bogus" in unknown.json()["detail"][0]["msg"]
    assert http.patch("/api/v1/strategies/rsi-infy/params", json={"params": {}}).status_code == 422
    assert store.strategy("rsi-infy") == before and store.history("rsi-infy") == []

    queued = http.patch("/api/v1/strategies/rsi-infy/params", json={"params": {"period": 10}, "id": "rsi-period-10"})
    assert queued.status_code == 202 and queued.json()["args"] == {"params": {"period": 10}}
    execute_all(store)
    after = fleet.http("viewer").get("/api/v1/strategies/rsi-infy").json()
    assert after["params"]["period"] == 10 and after["version"] == before.version + 1


def test_two_operators_racing_pause_and_resume_end_consistent_with_a_complete_audit(fleet: GatewayFleet,
                                                                                     store: Store) -> None:
    start = store.strategy("straddle-nifty")
    assert start is not None and start.desired_state == "running"
    barrier = threading.Barrier(3)
    submitted: list[str] = []
    finished = threading.Event()

    def operator(role: str) -> None:
        with fleet.http(role) as http:
            barrier.wait()
            for n, verb in zip(range(12), itertools.cycle(("pause", "resume")), strict=False):
                r = http.post("/api/v1/strategies/straddle-nifty/commands", json={"verb": verb, "id": f"race-{role}-{n}"})
                assert r.status_code == 202, r.text
                submitted.append(r.json()["id"])

    def executor() -> None:
        barrier.wait()
        while not finished.is_set():
            execute_all(store)
        execute_all(store)

    operators = [threading.Thread(target=operator, args=(role,)) for role in ("operator", "operator-2")]
    runner = threading.Thread(target=executor)
    for t in [*operators, runner]:
        t.start()
    for t in operators:
        t.join()
    finished.set()
    runner.join()

    commands = sorted(store.history("straddle-nifty", limit=1000), key=lambda c: c.seq)
    assert sorted(c.id for c in commands) == sorted(submitted) and len(submitted) == 24
    assert all(c.status in ("executed", "failed") for c in commands)
    state: State = start.desired_state
    for c in commands:  # replayed in queue order, the table says which ran and where they left it
        allowed = (state, c.verb) in STRATEGY_TRANSITIONS
        assert c.status == ("executed" if allowed else "failed"), c
        state = STRATEGY_TRANSITIONS[state, c.verb] if allowed else state
    end = store.strategy("straddle-nifty")
    assert end is not None and end.desired_state == state
    assert end.version == start.version + sum(c.status == "executed" for c in commands)
    audit = [a for a in store.audit("straddle-nifty", limit=10_000) if a.command_id in set(submitted)]
    for c in commands:
        mine = [(a.actor, a.action) for a in audit if a.command_id == c.id]
        actor = "operator-2" if c.id.startswith("race-operator-2-") else "operator-1"
        assert mine == [(actor, "submitted"), ("test-executor", c.status)], (c.id, mine)


def test_a_session_cookie_acts_only_from_the_consoles_own_origin(fleet: GatewayFleet, store: Store) -> None:
    """The console's REST calls go by its HttpOnly cookie; a change must carry the page's own Origin, which
    a form or script on another site cannot send."""
    login = fleet.http().post("/api/v1/session", json={"token": fleet.tokens["operator"]})
    cookie = {"Cookie": login.headers["set-cookie"].split(";")[0]}
    http, url, body = fleet.http(), "/api/v1/strategies/rsi-reliance/commands", {"verb": "restart", "id": "by-cookie"}
    assert http.get("/api/v1/whoami", headers=cookie).json()["name"] == "operator-1"
    assert http.post(url, json=body, headers=cookie).status_code == 403
    assert http.post(url, json=body, headers={**cookie, "Origin": "https://evil.example"}).status_code == 403
    assert store.command("by-cookie") is None
    assert [a.detail["reason"] for a in store.audit("rsi-reliance") if a.actor == "operator-1" and a.action == "refused"] == [
        "forbidden: not from the console's origin"] * 2
    assert http.post(url, json=body, headers={**cookie, "Origin": "https://gateway"}).status_code == 202
    logout = http.delete("/api/v1/session", headers=cookie)
    assert logout.status_code == 204 and 'algo_token=""' in logout.headers["set-cookie"]


def test_an_unmigrated_database_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    import asyncio

    control = ControlPlane(f"sqlite:///{tmp_path}/empty.db")
    with pytest.raises(Unavailable, match="schema revision none"):
        asyncio.run(control.call(lambda s: s.strategies()))
    assert control.failures == 1


def test_every_mutating_request_is_in_journald_with_actor_and_strategy(fleet: GatewayFleet) -> None:
    """Last: it stops the module's gateway to read its log."""
    fleet.gateway.send_signal(signal.SIGTERM)
    assert fleet.gateway.wait(20) == 0
    log = fleet.stderr()
    assert all(token not in log for token in fleet.tokens.values())
    audit = [line for line in log.splitlines() if "audit:" in line]
    assert any("ACTOR=operator-1" in line and "STRATEGY=ema-nifty" in line and "queued pause-ema-1" in line
               for line in audit), audit
    assert any("ACTOR=admin-1" in line and "STRATEGY=ema-wipro" in line and "RESULT=created" in line for line in audit)
    assert any("ACTOR=admin-1" in line and "STRATEGY=ema-tcs" in line and "RESULT=refused" in line for line in audit)
    assert any("ACTOR=viewer-1" in line and "forbidden" in line for line in audit)
    assert sum("ACTOR=operator-2" in line and "STRATEGY=straddle-nifty" in line for line in audit) == 12

