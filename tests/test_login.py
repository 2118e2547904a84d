"""`algoctl login`'s parts: the token exchange against the Kite emulator, the credential written
plain or encrypted with the real systemd-creds, and no secret in any output."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kiteconnect import KiteConnect

from daemons.algoctl.login import CREDENTIAL, LoginError, install_token, login, read_credential
from daemons.kite_emulator import Emulator
from tests.ports import refused_port

API_SECRET = "apisecret-" + secrets.token_hex(8)


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(api_secret=API_SECRET) as em:
        yield em


@pytest.fixture
def host_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """systemd-creds' host key in a temporary file, so the test never creates /var/lib/systemd's;
    skips where systemd-creds is missing or cannot encrypt with a host key here."""
    tool = shutil.which("systemd-creds")
    if tool is None:
        pytest.skip("systemd-creds is not installed: only the plain-file branch can be tested")
    monkeypatch.setenv("SYSTEMD_CREDENTIAL_SECRET", str(tmp_path / "credential.secret"))
    probe = subprocess.run([tool, "encrypt", "--name=probe", "--with-key=host", "-", "-"], input=b"probe",
                           capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"systemd-creds cannot encrypt with a host key in this container: {probe.stderr.decode().strip()}")
    return "host"


def request_token() -> str:
    return "rq-" + secrets.token_hex(8)


def assert_root_only(path: Path) -> None:
    st = path.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 0, 0)


def test_login_exchanges_the_request_token_for_a_working_access_token(emulator: Emulator) -> None:
    token = login(emulator.api_key, API_SECRET, request_token(), emulator.root)
    assert token != emulator.access_token
    assert KiteConnect(emulator.api_key, token, root=emulator.root).profile()["user_id"] == "AB1234"


def test_login_failures_say_why_without_the_secrets(emulator: Emulator) -> None:
    reused = request_token()
    login(emulator.api_key, API_SECRET, reused, emulator.root)
    with pytest.raises(LoginError, match=r"TokenException.*invalid or has expired") as used_twice:
        login(emulator.api_key, API_SECRET, reused, emulator.root)
    wrong = "wrongsecret-" + secrets.token_hex(8)
    with pytest.raises(LoginError, match="Invalid `checksum`") as bad_secret:
        login(emulator.api_key, wrong, reused, emulator.root)
    with refused_port() as port:
        closed = f"http://127.0.0.1:{port}"
        with pytest.raises(LoginError, match=r"cannot reach Kite .*ConnectionError") as unreachable:
            login(emulator.api_key, API_SECRET, reused, closed, timeout=2)
    for err in (used_twice, bad_secret, unreachable):
        for secret in (API_SECRET, wrong, reused):
            assert secret not in str(err.value)


def test_install_writes_a_root_only_file_atomically(tmp_path: Path) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o700)
    (creds / f"{CREDENTIAL}.cred").write_bytes(b"an encrypted token of yesterday")
    installed = install_token("token-one", creds, encrypt=False)
    assert (installed.path, installed.encrypted) == (creds / CREDENTIAL, False)
    assert "algo-execution.service" in installed.units and "algo-marketdata.service" in installed.units
    assert installed.path.read_text() == "token-one"
    assert_root_only(installed.path)
    first = installed.path.stat().st_ino
    install_token("token-two", creds, encrypt=False)
    assert read_credential(CREDENTIAL, creds) == "token-two"
    assert installed.path.stat().st_ino != first  # a new file renamed over the old: never written in place
    assert sorted(p.name for p in creds.iterdir()) == [CREDENTIAL]  # the other form and no temp file left
    with pytest.raises(LoginError, match="one line"):
        install_token("token\nsecond line", creds, encrypt=False)


def test_install_creates_the_directory_root_only(tmp_path: Path) -> None:
    creds = tmp_path / "etc" / "credentials"
    install_token("token", creds, encrypt=False)
    assert stat.S_IMODE(creds.stat().st_mode) == 0o700


def test_encryption_asked_without_systemd_creds_writes_the_plain_file(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    installed = install_token("token", tmp_path / "credentials", encrypt=True)
    assert (installed.path.name, installed.encrypted) == (CREDENTIAL, False)


def test_install_encrypts_with_systemd_creds(tmp_path: Path, host_key: str) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o700)
    (creds / CREDENTIAL).write_text("a plain token of yesterday")
    token = "tok-" + secrets.token_hex(16)
    installed = install_token(token, creds, encrypt=True, key=host_key)
    assert (installed.path, installed.encrypted) == (creds / f"{CREDENTIAL}.cred", True)
    assert token.encode() not in installed.path.read_bytes()
    assert_root_only(installed.path)
    assert sorted(p.name for p in creds.iterdir()) == [f"{CREDENTIAL}.cred"]
    assert read_credential(CREDENTIAL, creds) == token  # as LoadCredentialEncrypted= would decrypt it
    os.replace(installed.path, creds / "kite_api_key.cred")
    with pytest.raises(LoginError, match="systemd-creds decrypt failed"):  # the name is bound into the file
        read_credential("kite_api_key", creds)


def test_no_secret_reaches_logs_stdout_or_stderr(emulator: Emulator, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture,
                                                 capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)  # urllib3's and kiteconnect's debug lines included
    rq = request_token()
    token = login(emulator.api_key, API_SECRET, rq, emulator.root)
    messages = []
    with pytest.raises(LoginError) as refused:
        login(emulator.api_key, API_SECRET, rq, emulator.root)  # used twice
    messages.append(str(refused.value))
    print(install_token(token, tmp_path / "plain", encrypt=False))  # what the CLI would print
    if shutil.which("systemd-creds"):
        with pytest.raises(LoginError, match="systemd-creds encrypt failed") as failed:  # its stderr, masked
            install_token(token, tmp_path / "bad-key", encrypt=True, key="no-such-key")
        messages.append(str(failed.value))
    out, err = capfd.readouterr()
    for text in (caplog.text, out, err, *messages):
        for secret in (token, API_SECRET, rq):
            assert secret not in text
    assert "plain" in out  # the capture works: the path was printed
