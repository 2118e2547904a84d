"""nginx in front of algo-gateway: the config (rendered from ``nginx.conf.in``) and its TLS certificate.

Routes: ``/api/`` and ``/ws/`` (WebSocket upgrade) to the gateway's Unix socket, ``/grafana/`` to
Grafana where one is deployed (404 otherwise), ``/`` to the console's static files (the console shipped
in ``console/`` unless another directory is given); and a loopback
listener on ``gateway.metrics_port`` for Prometheus. A self-signed certificate (P-256, with the host
names as subject alternative names, which clients check) is made when the operator provides none.
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..runtime.config import FleetConfig

TEMPLATE = Path(__file__).with_name("nginx.conf.in")
CONSOLE = Path(__file__).with_name("console")  # the operator console, shipped in the wheel: served at / by default
PREFIX_DIRS = ("conf", "logs", "run", "temp")  # what the config's relative paths need under nginx's prefix
_UPSTREAM = re.compile(r"^[A-Za-z0-9.-]+:[0-9]{1,5}$")


@dataclass(frozen=True)
class Site:
    listen: str  # e.g. "0.0.0.0:443" or "127.0.0.1:8443"
    cert: Path
    key: Path
    console: Path = CONSOLE  # the console's static files
    grafana: str | None = None  # host:port of Grafana (serve_from_sub_path = true, root_url .../grafana/)
    user: str = "www-data"  # nginx's workers; it must be in the gateway socket's group


def render(config: FleetConfig, site: Site) -> str:
    for name in ("cert", "key", "console"):
        if not getattr(site, name).is_absolute():
            raise ValueError(f"{name}: {getattr(site, name)} must be an absolute path (nginx reads relative "
                             "certificate paths against its conf directory)")
    if site.grafana is not None and not _UPSTREAM.match(site.grafana):
        raise ValueError(f"grafana: {site.grafana!r} is not host:port")
    grafana = ("        location /grafana/ {\n            proxy_pass http://" + site.grafana + ";\n"
               "            proxy_set_header Host $http_host;\n        }"
               if site.grafana else "        location /grafana/ {\n            return 404;\n        }")
    values = {"USER": site.user, "API_SOCKET": str(config.gateway.socket), "LISTEN": site.listen,
              "CERT": str(site.cert), "KEY": str(site.key), "CONSOLE": str(site.console), "GRAFANA": grafana,
              "METRICS_PORT": str(config.gateway.metrics_port)}
    text = TEMPLATE.read_text()
    for name, value in values.items():
        if any(c in value for c in ";{}\n\"'") and name != "GRAFANA":
            raise ValueError(f"{name.lower()}: {value!r} would break the nginx config")
        text = text.replace(f"@{name}@", value)
    left = re.findall(r"@[A-Z_]+@", text)
    assert not left, f"unrendered template parameters: {left}"
    return text


def prepare_prefix(prefix: Path) -> None:
    for name in PREFIX_DIRS:
        (prefix / name).mkdir(parents=True, exist_ok=True)


def ensure_certificate(cert: Path, key: Path, names: list[str]) -> bool:
    """A self-signed certificate for ``names`` (DNS names or IP addresses) unless both files exist;
    True when one was made. The key is written mode 0600."""
    if cert.exists() and key.exists():
        return False
    san = ",".join(f"IP:{n}" if _is_ip(n) else f"DNS:{n}" for n in names)
    cert.parent.mkdir(parents=True, exist_ok=True)
    key.parent.mkdir(parents=True, exist_ok=True)
    old = os.umask(0o077)
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "825", "-subj", f"/CN={names[0]}", "-addext", f"subjectAltName={san}",
                        "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, text=True)
    finally:
        os.umask(old)
    cert.chmod(0o644)
    return True


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
