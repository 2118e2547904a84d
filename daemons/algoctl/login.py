"""`algoctl login`: the day's Kite access token, from the browser login into the fleet's credential.

Kite ends every access token at about 06:00 IST. Each morning a person logs in in a browser
(``https://kite.zerodha.com/connect/login?v=3&api_key=...``); Kite redirects with a one-time
``request_token``; ``login()`` exchanges it for the access token through
``KiteConnect.generate_session`` (the client sends the checksum sha256(api_key + request_token +
api_secret), so the secret itself never leaves the host). ``install_token()`` writes the token as
the systemd credential ``kite_access_token`` in the credentials directory, in the form the units
load (see the Ansible role's credentials drop-in): encrypted ``kite_access_token.cred``
(``LoadCredentialEncrypted=``) when ``systemd-creds`` is there and encryption is asked, else a
root-only ``kite_access_token`` (``LoadCredential=``); the other form is removed so a stale token
cannot linger.

Then ``algoctl login`` restarts the units that use the token (``Installed.units``: execution and
the feed; the engines and their strategies keep running): systemd acquires a unit's credentials
when it starts and keeps them unchanged while it runs (systemd.io/CREDENTIALS); refreshing them on
reload came upstream only in 2026 (systemd PR #40093), not in Debian 12's 252.

A token, the API secret and a request token are never printed or logged; error messages mask them.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..runtime.checkpoint import fsync_dir

__all__ = [
    "CREDENTIAL",
    "DEFAULT_CREDENTIALS_DIR",
    "TOKEN_UNITS",
    "Installed",
    "LoginError",
    "install_token",
    "login",
    "read_credential",
]

log = logging.getLogger("algo.algoctl")

CREDENTIAL = "kite_access_token"
DEFAULT_CREDENTIALS_DIR = Path("/etc/algo/credentials")
# The daemons that talk to Kite with the token (algo-premarket checks it at each start by itself).
TOKEN_UNITS = ("algo-execution.service", "algo-marketdata.service")
MASK = "**********"


class LoginError(Exception):
    """The login or the credential failed; the message is safe to print (secrets masked)."""


@dataclass(frozen=True)
class Installed:
    """What ``install_token`` wrote, for the operator's next step."""

    path: Path
    encrypted: bool
    units: tuple[str, ...] = TOKEN_UNITS


def _mask(text: str, *secrets: str) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


def login(api_key: str, api_secret: str, request_token: str, root: str, *, timeout: float = 7.0) -> str:
    """Exchange the browser login's request token for the day's access token."""
    # Imported here: kiteconnect pulls in Twisted, which the other algoctl commands never need.
    import requests
    from kiteconnect import KiteConnect
    from kiteconnect.exceptions import KiteException

    client = KiteConnect(api_key, root=root, timeout=timeout)
    try:
        session = client.generate_session(request_token, api_secret=api_secret)
    except KiteException as exc:
        message = _mask(str(exc), api_secret, request_token)
        raise LoginError(f"Kite refused the login: {type(exc).__name__} (HTTP {exc.code}): {message}") from None
    except requests.RequestException as exc:  # its text can carry the request: the class says enough
        raise LoginError(f"cannot reach Kite at {root}: {type(exc).__name__}") from None
    token = session.get("access_token") if isinstance(session, dict) else None
    if not token:
        raise LoginError("Kite's session answer has no access token")
    log.info("Kite login done for user %s", session.get("user_id"))
    return str(token)


def install_token(token: str, credentials_dir: Path = DEFAULT_CREDENTIALS_DIR, encrypt: bool = True, *,
                  key: str = "auto") -> Installed:
    """Write the credential atomically (a reader sees the old token or the new, never a torn one).

    ``key`` is ``systemd-creds --with-key`` (``auto``: the TPM2 and the host key when there is a
    TPM, else the host key).
    """
    if not token or token != token.strip() or "\n" in token:
        raise LoginError("an access token is one line of text without surrounding blanks")
    tool = shutil.which("systemd-creds") if encrypt else None
    if encrypt and tool is None:
        log.warning("systemd-creds not found: writing %s as a plain root-only file", CREDENTIAL)
    credentials_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if tool:
        data = _run_creds(tool, ["encrypt", f"--name={CREDENTIAL}", f"--with-key={key}", "-", "-"], token.encode(),
                          token)
        path, other = credentials_dir / f"{CREDENTIAL}.cred", credentials_dir / CREDENTIAL
    else:
        data = token.encode()
        path, other = credentials_dir / CREDENTIAL, credentials_dir / f"{CREDENTIAL}.cred"
    _write_atomically(path, data)
    other.unlink(missing_ok=True)
    return Installed(path, tool is not None)


def read_credential(name: str, credentials_dir: Path = DEFAULT_CREDENTIALS_DIR) -> str:
    """A credential as the units get it: ``NAME.cred`` decrypted with systemd-creds, else ``NAME``."""
    encrypted = credentials_dir / f"{name}.cred"
    if encrypted.exists():
        tool = shutil.which("systemd-creds")
        if tool is None:
            raise LoginError(f"{encrypted} is encrypted and systemd-creds is not installed")
        return _run_creds(tool, ["decrypt", f"--name={name}", str(encrypted), "-"]).decode().strip()
    try:
        return (credentials_dir / name).read_text().strip()
    except FileNotFoundError:
        raise LoginError(f"no credential {name} in {credentials_dir} (neither {name} nor {name}.cred)") from None


def _run_creds(tool: str, args: list[str], stdin: bytes = b"", *secrets: str) -> bytes:
    """systemd-creds with the secret on stdin (never in argv, which other users can read in /proc)."""
    done = subprocess.run([tool, *args], input=stdin, capture_output=True, timeout=60, check=False)
    if done.returncode != 0:
        stderr = _mask(done.stderr.decode(errors="replace").strip(), *secrets)
        raise LoginError(f"systemd-creds {args[0]} failed (exit {done.returncode}): {stderr}")
    return done.stdout


def _write_atomically(path: Path, data: bytes) -> None:
    """0600, root-owned, fsynced, then renamed over the old file; the directory fsynced after."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchown(f.fileno(), 0, 0)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    fsync_dir(path.parent)
