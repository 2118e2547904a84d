"""The operator console in a real headless Chromium (Debian's), through the real nginx (TLS) in front of a
real algo-gateway and broker: login, daemons, a strategy paused and its command followed to executed, a
fill published on the bus arriving live, the kill switch behind its confirmation, a bad login refused.

The tests run in order on one page (one login), like an operator's session. Screenshots go to the
module's temp dir (``screens/``), named after the step. No executor runs here: the test carries the
queued command out itself with the store's claim and finish, as the fleet's executor does.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from daemons.gateway import journal
from daemons.runtime.envelope import EXECUTION_FILL, EXECUTION_ORDER, RISK_PNL
from tests.gateway_fleet import NGINX, FrontDoor, browser_env, console_page, front_door, gateway_fleet, write_day
from tests.helpers import unavailable, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Page



@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FrontDoor]:
    if not Path(NGINX).exists():
        unavailable("nginx", "nginx is not installed (scripts/test.sh installs it)")
    tmp = tmp_path_factory.mktemp("console")
    with gateway_fleet(tmp / "fleet") as fleet, front_door(tmp, fleet) as door:
        write_day(fleet.config.daemons.journal.directory, journal.today().isoformat())
        yield door


@pytest.fixture(scope="module")
def screens(door: FrontDoor) -> Path:
    path = door.fleet.root.parent / "screens"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="module")
def page(door: FrontDoor) -> Iterator[Page]:
    with console_page(door.base, door.fleet.root.parent / "chromium-home") as page:
        yield page


def expect(*args: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(*args)


def test_chromiums_socket_fits_under_any_home(tmp_path: Path) -> None:
    """Chromium's SingletonSocket lives under TMPDIR; a Unix socket's path has 108 bytes. A pytest basetemp
    with a three-digit run number and an xdist worker made the console tests' profile path too long."""
    home = tmp_path / ("x" * 80)
    env, tmp = browser_env(home)
    try:
        assert len(f"{env['TMPDIR']}/org.chromium.Chromium.XXXXXX/SingletonSocket") < 108
        assert env["HOME"] == str(home) and tmp.is_dir()
    finally:
        tmp.rmdir()


def test_a_bad_login_shows_an_error(page: Page, screens: Path) -> None:
    expect(page.locator("#login-view")).to_be_visible()
    page.fill("#token", "not-a-token")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).to_have_text("That token is not valid.")
    expect(page.locator("#app")).to_be_hidden()
    page.screenshot(path=screens / "1-bad-login.png")


def test_login_shows_the_fleet_and_its_daemons(door: FrontDoor, page: Page, screens: Path) -> None:
    page.fill("#token", door.fleet.tokens["operator"])
    page.click("#login-form button[type=submit]")
    expect(page.locator("#whoami")).to_have_text("operator-1 (operator)")
    gateway = page.locator('#daemons tr[data-unit="algo-gateway"]')
    expect(gateway).to_contain_text("alive")
    expect(gateway).to_contain_text("healthy")
    expect(page.locator('#daemons tr[data-unit="algo-risk"]')).to_be_visible()  # expected, not running here
    expect(page.locator("#bus")).to_have_text("bus connected")
    expect(page.locator("#stream-state")).to_have_text("live")
    # the journal so far: positions and P&L from today's files
    expect(page.locator("#positions tbody")).to_contain_text("INFY")
    expect(page.locator("#pnl")).to_contain_text("100.00")
    expect(page.locator("#strategies tbody tr")).to_have_count(4)
    # the page's script never holds the token: it is in an HttpOnly cookie
    assert door.fleet.tokens["operator"] not in page.evaluate("document.cookie + JSON.stringify(localStorage)")
    page.screenshot(path=screens / "2-fleet.png", full_page=True)


def test_pausing_a_strategy_queues_a_command_followed_until_executed(door: FrontDoor, page: Page,
                                                                      screens: Path) -> None:
    row = page.locator('#strategies tr[data-strategy="ema-nifty"]')
    row.locator('button[data-verb="pause"]').click()
    status = row.locator(".command-status")
    expect(status).to_have_text("pause: pending")
    expect(page.locator("#history tbody tr").first).to_contain_text("pending")
    expect(page.locator("#history tbody tr").first).to_contain_text("operator-1")
    page.screenshot(path=screens / "3-pause-pending.png", full_page=True)

    store = door.fleet.store()
    try:  # the executor's part: claim the command, carry it out, report it
        command = wait_until(lambda: store.claim("test-executor"), 10, "the console's command in the queue")
        assert command is not None
        assert (command.strategy, command.verb, command.actor) == ("ema-nifty", "pause", "operator-1")
        store.finish(command.id, "executed", None, "test-executor")
    finally:
        store.close()
    expect(page.locator('#strategies tr[data-strategy="ema-nifty"] .command-status')).to_have_text("pause: executed")
    expect(page.locator('#strategies tr[data-strategy="ema-nifty"] .state')).to_have_text("paused")
    page.screenshot(path=screens / "4-pause-executed.png", full_page=True)


def test_a_command_the_strategy_cannot_take_shows_failed_with_the_reason(door: FrontDoor, page: Page) -> None:
    row = page.locator('#strategies tr[data-strategy="rsi-infy"]')
    row.locator('button[data-verb="resume"]').click()  # it is running: queued, then refused when it comes up
    expect(row.locator(".command-status")).to_have_text("resume: pending")
    store = door.fleet.store()
    try:
        assert store.claim("test-executor") is None  # the claim fails it with the reason, and nothing is left
    finally:
        store.close()
    expect(page.locator('#strategies tr[data-strategy="rsi-infy"] .command-status')).to_have_text(
        "resume: failed: resume needs a strategy that is paused; it is running")
    expect(page.locator('#strategies tr[data-strategy="rsi-infy"] .state')).to_have_text("running")


def test_parameters_refused_show_why_and_queue_nothing(door: FrontDoor, page: Page, screens: Path) -> None:
    page.locator('#strategies tr[data-strategy="ema-nifty"] button[data-verb="update_config"]').click()
    expect(page.locator("#params-dialog")).to_be_visible()
    page.fill("#params-json", '{"underlying": "NIFTY", "quantity": 75, "fast": 30, "slow": 21}')
    page.click("#params-save")
    expect(page.locator("#params-error")).to_contain_text("need 0 < fast < slow")
    page.screenshot(path=screens / "5-params-refused.png")
    page.fill("#params-json", '{"underlying": "NIFTY", "quantity": 75, "fast": 5, "slow": 21}')
    page.click("#params-save")
    expect(page.locator("#params-dialog")).to_be_hidden()
    expect(page.locator('#strategies tr[data-strategy="ema-nifty"] .command-status')).to_have_text("update_config: pending")
    history = door.fleet.http("viewer").get("/api/v1/commands", params={"strategy": "ema-nifty"}).json()
    assert [(c["verb"], c["args"]) for c in history] == [("update_config", {"params": {"fast": 5}}), ("pause", {})]


def publish(door: FrontDoor, topic: str, payload: dict[str, Any]) -> None:
    """From another thread: Playwright's sync API keeps an event loop running in this one."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(door.fleet.publish, topic, payload).result(timeout=20)


def test_a_fill_published_on_the_bus_appears_live(door: FrontDoor, page: Page, screens: Path) -> None:
    common = {"engine": "equity", "strategy": "rsi-infy", "symbol": "TCS", "side": "BUY", "quantity": 3}
    publish(door, EXECUTION_ORDER, {**common, "client_id": "live-c1", "order_id": "live-o1", "status": "COMPLETE",
                                    "filled_quantity": 3})
    publish(door, EXECUTION_FILL, {**common, "fill_id": "live-f1", "client_id": "live-c1", "price": 4012.5})
    fill = page.locator('#fills tr[data-fill="live-f1"]')
    expect(fill).to_contain_text("4012.5")
    expect(fill).to_contain_text("TCS")
    expect(page.locator('#orders tr[data-order="live-c1"]')).to_contain_text("COMPLETE")
    publish(door, RISK_PNL, {"realised": 0.0, "unrealised": -37.5, "by_engine": {"equity": {"realised": 0.0,
                                                                                           "unrealised": -37.5}},
                             "open_positions": 1})  # risk books it and marks it: P&L live, between the report's reloads
    expect(page.locator("#pnl-live")).to_have_text("live from risk: realised 0.00, unrealised -37.50, 1 open position")
    page.screenshot(path=screens / "6-live-fill.png", full_page=True)


def test_the_kill_switch_needs_a_confirmation(door: FrontDoor, page: Page, screens: Path) -> None:
    viewer = door.fleet.http("viewer")
    page.click("#kill-engage")
    expect(page.locator("#kill-dialog")).to_be_visible()
    page.screenshot(path=screens / "7-kill-confirm.png")
    page.click("#kill-cancel")
    expect(page.locator("#kill-dialog")).to_be_hidden()
    assert viewer.get("/api/v1/fleet").json()["kill_switch"] is None  # cancelled: nothing sent

    page.click("#kill-engage")
    page.click("#kill-confirm")  # a reason is required: the dialog stays
    expect(page.locator("#kill-dialog")).to_be_visible()
    page.fill("#kill-reason", "console drill")
    page.click("#kill-confirm")
    expect(page.locator("#kill-state")).to_contain_text("kill switch ENGAGED: console drill (operator-1 via gateway)")
    state = viewer.get("/api/v1/fleet").json()["kill_switch"]
    assert state["engaged"] and state["reason"] == "console drill (operator-1 via gateway)"
    page.screenshot(path=screens / "8-kill-engaged.png", full_page=True)


def test_a_viewer_sees_no_controls(door: FrontDoor, page: Page, screens: Path) -> None:
    page.click("#logout")
    expect(page.locator("#login-view")).to_be_visible()
    page.fill("#token", door.fleet.tokens["viewer"])
    page.click("#login-form button[type=submit]")
    expect(page.locator("#whoami")).to_have_text("viewer-1 (viewer)")
    expect(page.locator("#strategies tbody tr")).to_have_count(4)
    expect(page.locator('#strategies button[data-verb="pause"]').first).to_be_hidden()
    headers = page.locator("#strategies thead th:visible").all_inner_texts()
    assert headers == ["name", "kind", "engine", "desired", "v", "parameters", "last command"]
    row = page.locator('#strategies tr[data-strategy="rsi-infy"] td:visible').all_inner_texts()
    assert len(row) == len(headers) and row[-1].startswith("resume: failed")  # the columns line up
    expect(page.locator("#kill-engage")).to_be_hidden()
    page.screenshot(path=screens / "9-viewer.png", full_page=True)
