"""The operator console against the real fleet in the sandbox, one boot for the module: the paper fleet with
algo-commander, algo-gateway under its unit, the real nginx in front of the gateway's socket (on the host,
TLS on a loopback port, through /proc/PID/root), Debian's Chromium driving the console. A pause from the
console is carried out by the engine and blocks the next entry; an own-process strategy is stopped and
started through the REST API (its unit changes); ``kill -9`` of the gateway right after a 202 loses no
command, the unit restarts it and the console's stream comes back; a fill the fleet makes appears live;
two operators racing pause / resume through nginx leave the engine where the registry says, every
command audited in the database and in journald.

The tests run in order on one page (one login). Screenshots go to the module's temp dir (``screens/``)."""

from __future__ import annotations

import itertools
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from daemons.algoctl.sandbox import Sandbox
from daemons.runtime.config import load_config
from tests.conftest import require_systemd_sandbox
from tests.gateway_fleet import CHROMIUM, NGINX, FrontDoor, GatewayFleet, console_page, front_door
from tests.helpers import unavailable, wait_until
from tests.ports import free_port
from tests.systemd.busclient import Listener
from tests.systemd.test_commands import CONFIG, MODEL, command_fleet, entries, executed_lines, rsi_entry_ticks
from tests.systemd.test_risk import tick
from tests.test_runtime import NotifySocket

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.systemd

ALGOCTL = sys.prefix + "/bin/algoctl"
GATEWAY = "algo-gateway.service"
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sandbox, dict[str, str]]]:
    require_systemd_sandbox()
    if not Path(NGINX).exists():
        unavailable("nginx", "nginx is not installed (scripts/test.sh installs it)")
    if not CHROMIUM.exists():
        unavailable("Chromium", f"{CHROMIUM} is missing (scripts/test.sh installs Debian's chromium)")
    with command_fleet(tmp_path_factory.mktemp("console-fleet")) as sandbox:
        tokens = {}
        for name, role in (("viewer-1", "viewer"), ("operator-1", "operator"), ("operator-2", "operator")):
            # as root: the first creates the pepper credential the unit loads
            added = sandbox.run(ALGOCTL, "gateway", "token", "add", name, "--role", role)
            assert added.returncode == 0, added.stderr
            tokens[name if name == "operator-2" else role] = added.stdout.splitlines()[0]
        sandbox.systemctl("start", GATEWAY, check=True)
        yield sandbox, tokens


@pytest.fixture(scope="module")
def door(box: tuple[Sandbox, dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[FrontDoor]:
    """nginx on the host, in front of the sandbox's gateway socket as the host sees it."""
    sandbox, tokens = box
    tmp = tmp_path_factory.mktemp("front")
    (tmp / "fleet.toml").write_text(CONFIG + f'\n[gateway]\nsocket = "{sandbox.path("/run/algo-gateway/api.sock")}"\n'
                                    f"metrics_port = {free_port()}\n")
    config = load_config(tmp / "fleet.toml")
    fleet = GatewayFleet(tmp, tmp / "fleet.toml", config, {}, NotifySocket(tmp / "notify.sock"), tokens=tokens)
    try:
        with front_door(tmp, fleet) as front:
            yield front
    finally:
        fleet.notify.sock.close()


@pytest.fixture(scope="module")
def screens(door: FrontDoor) -> Path:
    path = door.fleet.root / "screens"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="module")
def page(door: FrontDoor) -> Iterator[Page]:
    with console_page(door.base, door.fleet.root / "chromium-home") as page:
        yield page


def expect(*args: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=TIMEOUT_MS)  # a restart and a command's round trip take seconds
    return playwright_expect(*args)


def off_loop(fn: Any, *args: Any) -> Any:
    """Bus and sandbox calls from another thread: Playwright's sync API keeps an event loop running in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result(timeout=60)


def test_login_shows_the_fleets_units_alive(door: FrontDoor, page: Page, screens: Path) -> None:
    page.fill("#token", door.fleet.tokens["operator"])
    page.click("#login-form button[type=submit]")
    expect(page.locator("#whoami")).to_have_text("operator-1 (operator)")
    expect(page.locator("#bus")).to_have_text("bus connected")
    expect(page.locator("#stream-state")).to_have_text("live")
    for unit in ("algo-risk", "algo-execution", "algo-equity", "algo-commander", "algo-gateway"):
        expect(page.locator(f'#daemons tr[data-unit="{unit}"]')).to_contain_text("alive")
    expect(page.locator('#strategies tr[data-strategy="model-infy"] .state')).to_have_text("running")
    page.screenshot(path=screens / "1-fleet.png", full_page=True)


def test_a_pause_from_the_console_is_executed_and_blocks_the_next_entry(
        box: tuple[Sandbox, dict[str, str]], page: Page, screens: Path) -> None:
    sandbox, _ = box
    sandbox.systemctl("stop", "algo-commander.service", check=True)  # to see the command wait in the queue
    row = page.locator('#strategies tr[data-strategy="rsi-infy"]')
    row.locator('button[data-verb="pause"]').click()
    expect(row.locator(".command-status")).to_have_text("pause: pending")
    page.screenshot(path=screens / "2-pause-pending.png", full_page=True)
    sandbox.systemctl("start", "algo-commander.service", check=True)
    expect(row.locator(".command-status")).to_have_text("pause: executed")  # by algo-commander and algo-equity
    expect(row.locator(".state")).to_have_text("paused")
    expect(page.locator("#history tbody tr").first).to_contain_text("operator-1")
    page.screenshot(path=screens / "3-pause-executed.png", full_page=True)
    line = sandbox.journalctl("-u", "algo-equity.service", "STRATEGY=rsi-infy", "ACTOR=operator-1", "-o", "cat").stdout
    assert "pause rsi-infy by operator-1: executed (paused" in line, line

    def blocked() -> list[str]:
        with Listener(sandbox, "strategy.signal") as listener:
            rsi_entry_ticks(listener)
            wait_until(lambda: "(1 paused)" in sandbox.show("algo-equity.service", "StatusText")["StatusText"], 5,
                       "the engine's status line to show the pause")
            return entries(listener)
    assert off_loop(blocked) == []  # the crossing came while paused


def command_status(door: FrontDoor, command_id: str) -> str:
    with door.https("operator") as api:
        answer = api.get(f"/api/v1/commands/{command_id}")
    assert answer.status_code == 200, answer.text
    status: str = answer.json()["status"]
    return status


def send(door: FrontDoor, strategy: str, verb: str, command_id: str) -> None:
    with door.https("operator") as api:
        answer = api.post(f"/api/v1/strategies/{strategy}/commands", json={"verb": verb, "id": command_id})
    assert answer.status_code == 202, answer.text


def test_an_own_process_strategy_stops_and_starts_through_the_api(box: tuple[Sandbox, dict[str, str]],
                                                                 door: FrontDoor) -> None:
    sandbox, _ = box
    pid = sandbox.show(MODEL, "MainPID")["MainPID"]
    send(door, "model-infy", "stop", "api-stop")
    wait_until(lambda: command_status(door, "api-stop") == "executed", 30, "the stop to be executed")
    assert sandbox.show(MODEL, "ActiveState")["ActiveState"] == "inactive"
    send(door, "model-infy", "start", "api-start")
    wait_until(lambda: command_status(door, "api-start") == "executed", 30, "the start to be executed")
    now = sandbox.show(MODEL, "ActiveState", "MainPID")
    assert now["ActiveState"] == "active" and now["MainPID"] != pid
    with door.https("viewer") as api:
        history = api.get("/api/v1/commands", params={"strategy": "model-infy"}).json()
    done = [(c["verb"], c["actor"], c["status"]) for c in history]
    assert done == [("start", "operator-1", "executed"), ("stop", "operator-1", "executed")]
    # algo-unitctl vouches only for its peer: the commander, running as the fleet's user
    audit = sandbox.journalctl("-t", "algo-unitctl", "-o", "cat").stdout.splitlines()
    assert audit == ["algo-strategy@model-infy.service by algo: ok"] * 2


def test_kill_9_of_the_gateway_after_a_202_loses_no_command(box: tuple[Sandbox, dict[str, str]], door: FrontDoor,
                                                           page: Page, screens: Path) -> None:
    sandbox, _ = box
    before = sandbox.show(GATEWAY, "MainPID", "NRestarts")
    off_loop(send, door, "rsi-reliance", "pause", "before-kill")
    sandbox.systemctl("kill", "--signal=KILL", GATEWAY, check=True)
    expect(page.locator("#stream-state")).not_to_have_text("live")
    page.screenshot(path=screens / "4-gateway-killed.png", full_page=True)
    wait_until(lambda: sandbox.show(GATEWAY, "ActiveState")["ActiveState"] == "active", 30, "the unit to restart the gateway")
    after = sandbox.show(GATEWAY, "MainPID", "NRestarts")
    assert after["MainPID"] != before["MainPID"] and int(after["NRestarts"]) == int(before["NRestarts"]) + 1
    wait_until(lambda: off_loop(command_status, door, "before-kill") == "executed", 30, "the command to be executed")
    assert len(executed_lines(sandbox, "algo-equity.service", "before-kill")) == 1
    expect(page.locator("#stream-state")).to_have_text("live")  # the console came back by itself
    expect(page.locator('#strategies tr[data-strategy="rsi-reliance"] .state')).to_have_text("paused")


def test_a_resume_from_the_console_lets_the_next_entry_through_and_its_fill_appears_live(
        box: tuple[Sandbox, dict[str, str]], page: Page, screens: Path) -> None:
    sandbox, _ = box
    row = page.locator('#strategies tr[data-strategy="rsi-infy"]')
    row.locator('button[data-verb="resume"]').click()
    expect(row.locator(".command-status")).to_have_text("resume: executed")

    def entry_filled() -> list[str]:
        with Listener(sandbox, "strategy.signal", "execution.fill") as listener:
            rsi_entry_ticks(listener)
            wait_until(lambda: entries(listener), 10, "an entry once resumed")

            def filled() -> bool:  # the paper broker trades an order on a tick after it: the market goes on
                listener.tick(tick("INFY", 940.0))
                return any(ev.type == "execution.fill" for _, ev in listener.events)
            wait_until(filled, 10, "the entry's fill", interval=0.3)
            return entries(listener)
    assert off_loop(entry_filled)
    fill = page.locator("#fills tbody tr.live").first  # from the stream, not a poll
    expect(fill).to_contain_text("INFY")
    expect(fill).to_contain_text("rsi-infy")
    page.screenshot(path=screens / "5-live-fill.png", full_page=True)


def test_two_operators_racing_pause_and_resume_leave_the_engine_where_the_registry_says(
        box: tuple[Sandbox, dict[str, str]], door: FrontDoor) -> None:
    sandbox, _ = box
    barrier = threading.Barrier(2)

    def operator(role: str) -> list[str]:
        sent = []
        with door.https(role) as api:
            barrier.wait()
            for n, verb in zip(range(6), itertools.cycle(("pause", "resume")), strict=False):
                answer = api.post("/api/v1/strategies/rsi-reliance/commands", json={"verb": verb, "id": f"race-{role}-{n}"})
                assert answer.status_code == 202, answer.text
                sent.append(answer.json()["id"])
        return sent

    with ThreadPoolExecutor(2) as pool:
        submitted = [i for ids in pool.map(operator, ("operator", "operator-2")) for i in ids]
    wait_until(lambda: all(command_status(door, c) in ("executed", "failed") for c in submitted), 60,
               "every raced command to be carried out")
    with door.https("viewer") as api:
        desired = api.get("/api/v1/strategies/rsi-reliance").json()["desired_state"]
        history = {c["id"]: c for c in api.get("/api/v1/commands", params={"strategy": "rsi-reliance", "limit": 100}).json()}
    assert {history[c]["actor"] for c in submitted} == {"operator-1", "operator-2"}
    assert all(history[c]["actor"] == ("operator-2" if c.startswith("race-operator-2-") else "operator-1") for c in submitted)
    # the engine applied what the registry says it did: paused exactly when the desired state is
    wait_until(lambda: ("(1 paused)" in sandbox.show("algo-equity.service", "StatusText")["StatusText"])
               == (desired == "paused"), 10, f"algo-equity to be {desired}")
    executed = [c for c in submitted if history[c]["status"] == "executed"]
    assert executed and all(len(executed_lines(sandbox, "algo-equity.service", c)) == 1 for c in executed)
    for actor in ("operator-1", "operator-2"):  # each request audited in journald with its actor
        lines = sandbox.journalctl("-u", GATEWAY, f"ACTOR={actor}", "-o", "cat").stdout
        assert all(c in lines for c in submitted if history[c]["actor"] == actor), lines[-2000:]
