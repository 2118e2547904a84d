"""`algoctl gateway token add|list|remove`: the gateway's API tokens, managed on its host as root.

A new token is printed once and never stored: the gateway's token file keeps HMAC-SHA256(pepper,
token). The pepper is the systemd credential ``gateway_pepper``; the first ``token add`` creates it
(32 random bytes, hex, a root-only file) when the credentials directory has none.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from ..gateway.tokens import Role, TokenStore
from ..runtime.config import FleetConfig
from .login import DEFAULT_CREDENTIALS_DIR, read_credential

PEPPER = "gateway_pepper"


def store(config: FleetConfig, credentials_dir: Path = DEFAULT_CREDENTIALS_DIR, create: bool = False) -> TokenStore:
    return TokenStore(config.gateway.tokens, pepper(credentials_dir, create).encode())


def pepper(credentials_dir: Path, create: bool) -> str:
    """The gateway's pepper as its unit gets it; with ``create``, a new one when there is none."""
    if create and not any((credentials_dir / name).exists() for name in (PEPPER, f"{PEPPER}.cred")):
        credentials_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(credentials_dir / PEPPER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    return read_credential(PEPPER, credentials_dir)


def add(config: FleetConfig, name: str, role: str, credentials_dir: Path = DEFAULT_CREDENTIALS_DIR) -> str:
    return store(config, credentials_dir, create=True).add(name, Role[role])


def listing(config: FleetConfig, credentials_dir: Path = DEFAULT_CREDENTIALS_DIR) -> str:
    rows = store(config, credentials_dir).list()
    return "\n".join(f"{name}\t{role.name}\tcreated {created}" for name, role, created in rows) or "no tokens"


def remove(config: FleetConfig, name: str, credentials_dir: Path = DEFAULT_CREDENTIALS_DIR) -> None:
    store(config, credentials_dir).remove(name)
