"""Logging in to Redis as an ACL user whose password is a systemd credential: the bridge and execution's lease.

The client has redis-py's own retries off and a deadline on every call (``socket_timeout_sec``): the
caller decides when to try again, and a partition is an error, not a silent stall.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .config import ConfigError, Problem, RedisLogin

# What means "Redis is unreachable" (try again later) rather than "Redis refused this command".
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)


def password(login: RedisLogin, setting: str, unit: str, credentials: str | None = None) -> str:
    """The ACL user's password from the systemd credential (LoadCredential= in ``unit``); ConfigError naming
    ``setting`` (the config key that names the credential) if it is absent."""
    directory = credentials or os.environ.get("CREDENTIALS_DIRECTORY")
    file = Path(directory or "/nonexistent") / login.password_credential
    try:
        return file.read_text().strip()
    except OSError as exc:
        raise ConfigError("credentials", [Problem(
            setting, f"cannot read the credential {login.password_credential!r} ({exc.strerror}): install it and "
                     f"load it in {unit} with LoadCredential={login.password_credential}:PATH")]) from None


def connect(login: RedisLogin, secret: str) -> aioredis.Redis:
    """A client for the login's Redis; nothing is sent until the first command."""
    tls: dict[str, Any] = {"ssl_ca_certs": str(login.tls_ca_file), "ssl_cert_reqs": "required"} if login.tls_ca_file else {}
    client: aioredis.Redis = aioredis.Redis.from_url(
        login.redis_url,
        username=login.username,
        password=secret,
        socket_timeout=login.socket_timeout_sec,
        socket_connect_timeout=login.socket_timeout_sec,
        retry=Retry(NoBackoff(), 0),  # the caller retries, with its own backoff or deadline
        driver_info=None,  # no CLIENT SETINFO: the ACL users may run only the commands they need
        **tls,
    )
    return client
