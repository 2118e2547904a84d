"""algo-bridge under its real unit: it logs in to Redis with the password systemd hands it as a credential,
reaches Redis on loopback under the hardening, relays this host's events out and other hosts' in, and stops
cleanly. Redis runs on the host (the sandbox shares its network), with the bridge's ACL user."""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from daemons.algoctl.sandbox import Sandbox
from tests.conftest import TEST_CONFIG, require_systemd_sandbox
from tests.helpers import wait_until
from tests.ports import free_port

pytestmark = pytest.mark.systemd

PASSWORD = "bridge-unit-test"
PUBLISH = """
import asyncio, sys
from daemons.runtime.client import BusClient
from daemons.runtime.config import BusSection
async def main() -> None:
    bus = BusClient.for_config(BusSection(), source="fno")
    await bus.start()
    bus.publish("strategy.signal", {"symbol": "INFY"})
    await asyncio.sleep(0.5)
    await bus.close()
asyncio.run(main())
"""
ENTRY = {"t": "risk.approved", "k": "", "h": "hostB",
         "b": b'{"id":"risk-b-1","ts":1,"type":"risk.approved","source":"risk","seq":1,"trace":"t","payload":{}}'}


@pytest.fixture
def redis_port(tmp_path: Path) -> Iterator[int]:
    exe = shutil.which("redis-server")
    assert exe is not None, "scripts/test.sh installs redis-server"
    port = free_port()
    conf = tmp_path / "redis.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\nsave ''\nappendonly no\n"
                    "user default on nopass ~* &* +@all\n"
                    f"user algo on >{PASSWORD} ~algo:* resetchannels -@all +@stream +ping\n")
    proc = subprocess.Popen([exe, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: redis.Redis(port=port).ping(), 10, "redis-server")
        yield port
    finally:
        proc.kill()
        proc.wait()


def test_the_bridge_unit_relays_with_its_credential_and_stops(tmp_path: Path, redis_port: int) -> None:
    require_systemd_sandbox()
    box = Sandbox(tmp_path / "sandbox")
    config = tmp_path / "fleet.toml"
    config.write_text(TEST_CONFIG + f'\n[daemons.bridge]\nredis_url = "redis://127.0.0.1:{redis_port}"\nhost = "hostA"\n'
                      'daemons = ["fno"]\nexports = ["strategy.*"]\nimports = ["risk.*"]\n')
    box.prepare(config)
    creds = box.etc / "credentials"
    creds.mkdir(mode=0o700)
    (creds / "algo_redis_password").write_text(PASSWORD)
    (creds / "algo_redis_password").chmod(0o600)
    box.start()
    try:
        box.systemctl("start", "algo-bridge.service", check=True)  # Type=notify: returns at READY=1
        assert box.show("algo-bridge.service", "ActiveState")["ActiveState"] == "active"
        admin = redis.Redis(port=redis_port)
        def grouped() -> bool:
            try:
                return any(g["name"] == b"hostA" for g in admin.xinfo_groups("algo:bus:risk"))
            except redis.ResponseError:
                return False  # no stream yet
        wait_until(grouped, 15, "the bridge's consumer group")

        out = box.run(sys.executable, "-c", PUBLISH)
        assert out.returncode == 0, out.stderr
        wait_until(lambda: admin.xlen("algo:bus:strategy") == 1, 15, "the signal in Redis")
        entries: Any = admin.xrange("algo:bus:strategy")
        assert entries[0][1][b"h"] == b"hostA"  # entries name the host that exported them

        admin.xadd("algo:bus:risk", ENTRY)  # type: ignore[arg-type]

        def imported() -> bool:
            body = urllib.request.urlopen("http://127.0.0.1:9480/metrics", timeout=5).read().decode()
            return 'algo_bridge_imported_total{lane="order"} 1.0' in body
        wait_until(imported, 15, "the decision imported")
        wait_until(lambda: admin.xpending("algo:bus:risk", "hostA")["pending"] == 0, 15, "its acknowledgement")
        admin.close()

        box.systemctl("stop", "algo-bridge.service", check=True)
        assert box.show("algo-bridge.service", "Result", "ExecMainStatus") == {"Result": "success", "ExecMainStatus": "0"}
        log = box.journalctl("-u", "algo-bridge.service").stdout
        assert PASSWORD not in log and "bridge ready" in log, log
    finally:
        box.stop()
