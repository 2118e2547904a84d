"""The real nginx in front of a real algo-gateway and broker: TLS, REST, the WebSocket upgrade, the
console, Grafana's path, the loopback metrics listener; the rendered config passes `nginx -t`."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from daemons.gateway.nginx import Site, ensure_certificate, prepare_prefix, render
from daemons.runtime.envelope import EXECUTION_FILL
from tests.gateway_fleet import NGINX, FrontDoor, front_door, gateway_fleet, nginx_test

pytestmark = pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed (scripts/test.sh installs it)")


class Grafana(BaseHTTPRequestHandler):
    """Stands in for Grafana: answers with the path it was asked for."""

    def do_GET(self) -> None:
        body = f"grafana saw {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FrontDoor]:
    tmp = tmp_path_factory.mktemp("ngx")
    with gateway_fleet(tmp / "fleet") as fleet:
        console = tmp / "console"
        console.mkdir()
        (console / "index.html").write_text("<title>algo console</title>")
        grafana = ThreadingHTTPServer(("127.0.0.1", 0), Grafana)
        threading.Thread(target=grafana.serve_forever, daemon=True).start()
        try:
            with front_door(tmp, fleet, console, f"127.0.0.1:{grafana.server_address[1]}") as door:
                cert, key = door.cert, door.cert.with_name("key.pem")
                assert not ensure_certificate(cert, key, ["localhost"])  # an existing one is kept
                assert key.stat().st_mode & 0o777 == 0o600
                yield door
        finally:
            grafana.shutdown()


def test_rest_through_nginx_over_tls(door: FrontDoor) -> None:
    assert door.https().get("/api/v1/fleet").status_code == 401
    assert door.https("viewer").get("/api/v1/fleet").json()["bus_connected"] is True
    denied = door.https("viewer").post("/api/v1/kill-switch", json={"engage": True, "reason": "x"})
    assert denied.status_code == 403
    schema = door.https().get("/api/v1/openapi.json").json()
    assert "/api/v1/kill-switch" in schema["paths"]


def test_console_grafana_and_metrics_routes(door: FrontDoor) -> None:
    assert "algo console" in door.https().get("/").text
    assert "algo console" in door.https().get("/some/console/route").text  # the console's own routing
    assert door.https().get("/grafana/d/fleet?x=1").text == "grafana saw /grafana/d/fleet?x=1"
    assert "algo console" in door.https().get("/metrics").text  # not exposed on the front door
    scraped = httpx.get(f"http://127.0.0.1:{door.metrics_port}/metrics", timeout=10).text
    assert "algo_gateway_ws_clients" in scraped and "algo_bus_client_connected 1.0" in scraped


def test_websocket_through_nginx_streams_a_published_fill(door: FrontDoor) -> None:
    session = door.https().post("/api/v1/session", json={"token": door.fleet.tokens["viewer"]})
    assert session.status_code == 204
    headers = {"Cookie": session.headers["set-cookie"].split(";")[0], "Origin": door.base}
    ctx = ssl.create_default_context(cafile=door.cert)
    with connect(door.base.replace("https", "wss") + "/ws/events", ssl=ctx, additional_headers=headers,
                 open_timeout=10) as ws:
        ws.send(json.dumps({"topics": ["execution.fill"]}))
        assert json.loads(ws.recv(timeout=10))["type"] == "subscribed"
        door.fleet.publish(EXECUTION_FILL, {"fill_id": "through-nginx"})
        message = json.loads(ws.recv(timeout=10))
    assert message["type"] == "event" and message["event"]["payload"] == {"fill_id": "through-nginx"}


def test_nginx_t_refuses_a_config_whose_certificate_is_missing(door: FrontDoor, tmp_path: Path) -> None:
    prepare_prefix(tmp_path)
    site = Site(listen="127.0.0.1:1", cert=tmp_path / "none.pem", key=tmp_path / "none.key", console=tmp_path)
    (tmp_path / "conf" / "nginx.conf").write_text(render(door.fleet.config, site))
    checked = nginx_test(tmp_path)
    assert checked.returncode != 0 and "none.pem" in checked.stderr


def test_render_refuses_what_would_break_the_config(door: FrontDoor, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="absolute"):
        render(door.fleet.config, Site(listen="127.0.0.1:1", cert=Path("cert.pem"), key=tmp_path, console=tmp_path))
    with pytest.raises(ValueError, match="listen"):
        render(door.fleet.config, Site(listen="1; evil", cert=tmp_path, key=tmp_path, console=tmp_path))
    with pytest.raises(ValueError, match="host:port"):
        render(door.fleet.config, Site(listen="127.0.0.1:1", cert=tmp_path, key=tmp_path, console=tmp_path,
                                       grafana="http://x/"))


def test_nginx_limits_the_console_login_per_address(door: FrontDoor) -> None:
    """A second line behind the gateway's own limit: valid logins, which the gateway never limits."""
    with door.https() as https:
        codes = [https.post("/api/v1/session", json={"token": door.fleet.tokens["viewer"]}).status_code for _ in range(25)]
        assert https.get("/api/v1/openapi.json").status_code == 200  # the rest of /api/ is not limited
    assert codes[0] == 204 and 429 in codes, codes


def test_algoctl_renders_the_template_and_makes_the_certificate_once(door: FrontDoor, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """What the Ansible role runs: one template for the tests, the bench and the deploy."""
    from daemons.algoctl.main import main

    config = ["--config", str(door.fleet.config_path)]
    cert, key = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    for made in (True, False):
        with pytest.raises(SystemExit) as done:
            main(["gateway", "certificate", "--cert", str(cert), "--key", str(key), "localhost", "127.0.0.1", *config])
        assert done.value.code == 0 and ("made" in capsys.readouterr().out) is made
    with pytest.raises(SystemExit) as done:
        main(["gateway", "nginx-config", "--listen", "127.0.0.1:1", "--cert", str(cert), "--key", str(key),
              "--console", str(tmp_path), "--user", "root", *config])
    assert done.value.code == 0
    site = Site(listen="127.0.0.1:1", cert=cert, key=key, console=tmp_path, user="root")
    assert capsys.readouterr().out == render(door.fleet.config, site)
    with pytest.raises(SystemExit) as done:
        main(["gateway", "nginx-config", "--listen", "1; evil", "--cert", str(cert), "--key", str(key),
              "--console", str(tmp_path), *config])
    assert done.value.code == 1 and "would break the nginx config" in capsys.readouterr().err


def test_nginx_listens_where_fleet_toml_says(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """gateway.listen is the one source of nginx's TLS listener (premarket checks that port): the Ansible role
    gives no --listen; without either there is nothing to render."""
    from daemons.algoctl.main import main

    fleet = tmp_path / "fleet.toml"
    args = ["gateway", "nginx-config", "--cert", "/etc/algo/cert.pem", "--key", "/etc/algo/key.pem", "--config", str(fleet)]
    fleet.write_text('[gateway]\nlisten = "127.0.0.1:8443"\n')
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 0 and "listen 127.0.0.1:8443 ssl http2;" in capsys.readouterr().out
    fleet.write_text("")
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 1 and "set gateway.listen in the config" in capsys.readouterr().err


def test_the_shipped_console_is_the_default(door: FrontDoor, tmp_path: Path) -> None:
    """What the Ansible role renders unless the operator names another directory: the console in the wheel."""
    from daemons.gateway.nginx import CONSOLE

    assert {p.name for p in CONSOLE.iterdir()} >= {"index.html", "console.js", "console.css"}
    text = render(door.fleet.config, Site(listen="127.0.0.1:1", cert=tmp_path, key=tmp_path))
    assert f"root {CONSOLE};" in text and "Content-Security-Policy" in text
