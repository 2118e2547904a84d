"""`algoctl login` end to end against the Kite emulator: the request token comes from stdin (never
an argument), the access token lands as the credential, and nothing secret is printed."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

from kiteconnect import KiteConnect

from daemons.algoctl.login import CREDENTIAL
from daemons.kite_emulator import Emulator


def test_algoctl_login_installs_a_working_token_and_prints_no_secret(tmp_path: Path) -> None:
    secret = "apisecret-" + secrets.token_hex(8)
    request = "rq-" + secrets.token_hex(8)
    creds = tmp_path / "credentials"
    creds.mkdir()
    with Emulator(api_secret=secret) as em:
        (creds / "kite_api_key").write_text(em.api_key)
        (creds / "kite_api_secret").write_text(secret)
        config = tmp_path / "fleet.toml"
        config.write_text(f'[kite]\nroot = "{em.root}"\n')
        out = subprocess.run([sys.prefix + "/bin/algoctl", "login", "--no-encrypt", "--no-restart", "--credentials", str(creds),
                              "--config", str(config)], input=request + "\n", capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        token = (creds / CREDENTIAL).read_text().strip()
        assert KiteConnect(em.api_key, token, root=em.root).profile()["user_id"]
    assert "systemctl try-restart algo-execution.service algo-marketdata.service" in out.stdout
    for leaked in (token, secret, request):
        assert leaked not in out.stdout + out.stderr
