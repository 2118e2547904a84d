"""A broker and a real algo-gateway process on Unix sockets in a temp dir, for the gateway's tests, and
the real nginx in front of them (TLS on a loopback port, a private prefix)."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from daemons.algoctl import control, gateway
from daemons.algoctl.processes import stop_all
from daemons.control_plane.drift import declared
from daemons.control_plane.store import Store
from daemons.gateway.nginx import CONSOLE, Site, ensure_certificate, prepare_prefix, render
from daemons.journal_format.layout import COLUMNS
from daemons.runtime.config import FleetConfig, load_config
from daemons.runtime.envelope import Event
from tests.conftest import TEST_CONFIG
from tests.helpers import unavailable, wait_until
from tests.ports import free_port, free_ports
from tests.test_runtime import NotifySocket

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_TIMEOUT_MS = 60_000  # a bound for a failure, not a wait: a loaded CI machine starts Chromium slowly

# Today's journal: INFY bought 10 @ 100, 4 sold @ 110; one order still open, one rejected
ORDERS = [
    {"client_id": "c1", "status": "OPEN", "symbol": "INFY", "side": "BUY", "quantity": "10"},
    {"client_id": "c1", "status": "COMPLETE", "symbol": "INFY", "side": "BUY", "quantity": "10"},
    {"client_id": "c2", "status": "COMPLETE", "symbol": "INFY", "side": "SELL", "quantity": "4"},
    {"client_id": "c3", "status": "REJECTED", "symbol": "TCS", "side": "BUY", "quantity": "1"},
]
FILLS = [
    {"fill_id": "f1", "client_id": "c1", "symbol": "INFY", "order_id": "o1", "side": "BUY", "quantity": "10", "price": "100"},
    {"fill_id": "f2", "client_id": "c2", "symbol": "INFY", "order_id": "o2", "side": "SELL", "quantity": "4", "price": "110"},
]


def write_day(journal: Path, day: str) -> None:
    folder = journal / day
    folder.mkdir(parents=True)
    common = {"engine": "equity", "strategy": "rsi-infy", "instrument_type": "EQ", "ts": f"{day}T10:00:00+05:30"}
    for name, rows in (("orders.csv", ORDERS), ("fills.csv", FILLS)):
        lines = [",".join(COLUMNS[name])]
        lines += [",".join({**common, **row}.get(c, "") for c in COLUMNS[name]) for row in rows]
        (folder / name).write_text("\n".join(lines) + "\n")


@dataclass
class GatewayFleet:
    root: Path
    config_path: Path
    config: FleetConfig
    env: dict[str, str]
    notify: NotifySocket
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)  # role -> token

    def store(self) -> Store:
        """The control plane's database, as the gateway and a command's executor use it (close it after)."""
        return Store.open(self.config.control_plane.database_url)

    @property
    def api_socket(self) -> Path:
        return self.config.gateway.socket

    @property
    def gateway(self) -> subprocess.Popen[str]:
        return self.procs[-1]

    def http(self, role: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.Client(transport=httpx.HTTPTransport(uds=str(self.api_socket)), base_url="http://gateway",
                            headers=headers, timeout=10)

    def publish(self, topic: str, payload: dict[str, Any]) -> Event:
        """As an operator's algoctl would: through the real broker."""
        return control.send(self.config, topic, payload)

    def stderr(self) -> str:
        """The gateway's log lines so far (after it exited)."""
        assert self.gateway.stderr is not None
        return self.gateway.stderr.read()


@contextmanager
def gateway_fleet(tmp: Path, *, seed: bool = True, **gateway_keys: object) -> Iterator[GatewayFleet]:
    """``seed=False``: no control-plane database at all (the gateway must start and serve without it). The
    broker's metrics port and the gateway's (nginx's loopback listener in a front door) are free ones."""
    tmp.mkdir(parents=True, exist_ok=True)
    bus_port, metrics_port = free_ports(2)
    gateway_keys = {"metrics_port": metrics_port, **gateway_keys}
    extra = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in gateway_keys.items())
    config_path = tmp / "fleet.toml"
    config_path.write_text(
        TEST_CONFIG.replace('"/run/algo/bus.sock"', f'"{tmp}/bus.sock"')
        .replace("metrics_port = 9470", f"metrics_port = {bus_port}")
        .replace('directory = "/var/lib/algo/journal"', f'directory = "{tmp}/journal"')
        .replace("sqlite:////var/lib/algo/control/control.db", f"sqlite:///{tmp}/control/control.db")
        + f'\n[gateway]\nsocket = "{tmp}/api.sock"\ntokens = "{tmp}/state/tokens.json"\n{extra}')
    env = {**os.environ, "ALGO_CONFIG": str(config_path), "CREDENTIALS_DIRECTORY": str(tmp / "creds")}
    env.pop("NOTIFY_SOCKET", None)
    config = load_config(config_path)
    fleet = GatewayFleet(tmp, config_path, config, env, NotifySocket(tmp / "notify.sock"))
    for role in ("viewer", "operator", "admin"):
        fleet.tokens[role] = gateway.add(config, f"{role}-1", role, tmp / "creds")
    if seed:
        store = Store.open(config.control_plane.database_url, migrate=True)  # as the deploy does: migrate and seed
        store.seed(declared(config), "deploy")
        store.close()
    try:
        fleet.procs.append(subprocess.Popen([sys.executable, "-m", "daemons.bus"], env=env,
                                            stderr=subprocess.DEVNULL, text=True))
        wait_until(lambda: config.bus.socket.exists(), 20, "the broker's socket")
        fleet.procs.append(subprocess.Popen(
            [sys.executable, "-m", "daemons.gateway"], stderr=subprocess.PIPE, text=True,
            env={**env, "NOTIFY_SOCKET": str(fleet.notify.path), "WATCHDOG_USEC": "400000"}))
        fleet.notify.wait_for("READY=1")
        yield fleet
    finally:
        for proc in reversed(fleet.procs):  # the gateway first, then its broker
            stop_all([proc], 20)
        fleet.notify.sock.close()


NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def nginx_test(prefix: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NGINX, "-t", "-p", f"{prefix}/", "-c", "conf/nginx.conf"], capture_output=True, text=True)


@dataclass
class FrontDoor:
    fleet: GatewayFleet
    base: str
    cert: Path
    metrics_port: int

    def https(self, role: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.fleet.tokens[role]}"} if role else {}
        return httpx.Client(base_url=self.base, verify=ssl.create_default_context(cafile=self.cert), headers=headers,
                            timeout=10)


@contextmanager
def front_door(tmp: Path, fleet: GatewayFleet, console: Path = CONSOLE, grafana: str | None = None) -> Iterator[FrontDoor]:
    """nginx rendered from the gateway's template (checked with nginx -t) on a loopback port, in front of
    ``fleet``'s gateway, as root (no www-data needed for a socket in a temp dir)."""
    cert, key = tmp / "tls" / "cert.pem", tmp / "tls" / "key.pem"
    assert ensure_certificate(cert, key, ["localhost", "127.0.0.1"])
    port = free_port()
    prefix = tmp / "prefix"
    prepare_prefix(prefix)
    site = Site(listen=f"127.0.0.1:{port}", cert=cert, key=key, console=console, grafana=grafana, user="root")
    (prefix / "conf" / "nginx.conf").write_text(render(fleet.config, site))
    checked = nginx_test(prefix)
    assert checked.returncode == 0 and "test is successful" in checked.stderr, checked.stderr
    nginx = subprocess.Popen([NGINX, "-p", f"{prefix}/", "-c", "conf/nginx.conf", "-g", "daemon off;"],
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: _accepts(port), 20, "nginx listening")
        yield FrontDoor(fleet, f"https://127.0.0.1:{port}", cert, fleet.config.gateway.metrics_port)
    finally:
        nginx.terminate()
        nginx.wait(20)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@contextmanager
def console_page(base: str, home: Path) -> Iterator[Page]:
    """Debian's Chromium, headless through Playwright, on the console at ``base``, its profile in ``home``
    (Chromium writes ~/.config and ~/.cache: not the real ones). No uncaught script error may happen in the
    whole session."""
    if not CHROMIUM.exists():
        unavailable("Chromium", f"{CHROMIUM} is missing (scripts/test.sh installs Debian's chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright", "the playwright package is missing (the test extra installs it)")
    home.mkdir(exist_ok=True)
    env, tmp = browser_env(home)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, env=env)
            context = browser.new_context(ignore_https_errors=True, viewport={"width": 1400, "height": 1000})
            context.set_default_timeout(BROWSER_TIMEOUT_MS)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(base + "/")
            yield page
            browser.close()
            assert errors == [], errors
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(home, ignore_errors=True)


def browser_env(home: Path) -> tuple[dict[str, str | float | bool], Path]:
    """Chromium's environment: its profile in ``home``, its TMPDIR a short new directory (returned, for the
    caller to remove). Chromium puts its SingletonSocket under TMPDIR, and a Unix socket's path must fit in
    108 bytes: under a pytest basetemp (``/tmp/pytest-of-root/pytest-105/popen-gw0/...``) it did not."""
    tmp = Path(tempfile.mkdtemp(prefix="chromium-", dir="/tmp"))
    return {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "XDG_CACHE_HOME": str(home / ".cache"),
            "TMPDIR": str(tmp), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}, tmp
