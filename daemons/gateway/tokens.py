"""API tokens: random, shown once, kept only as HMAC-SHA256(pepper, token).

A token is ``secrets.token_urlsafe(32)`` (256 bits), so a slow password hash buys nothing: the
digest is looked up directly (2 µs), and a stolen token file is useless without the pepper, which
lives in a systemd credential (``gateway_pepper``), not beside the file. The file is JSON, written
atomically (runtime/checkpoint), read again whenever it changed on disk, so ``algoctl gateway token``
takes effect without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

import orjson

from ..runtime import checkpoint

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class Role(IntEnum):
    """Each role may do what the roles below it may."""

    viewer = 1  # read the fleet
    operator = 2  # act on it: the kill switch (pause, resume, strategy commands later)
    admin = 3  # change who may: tokens, strategies' parameters (later)


class TokenError(ValueError):
    """A token file or request the store refuses; the message never holds a token."""


@dataclass(frozen=True)
class Principal:
    """Who made a request: the token's name (journald's ACTOR=) and its role."""

    name: str
    role: Role


def digest(pepper: bytes, token: str) -> str:
    return hmac.new(pepper, token.encode(), hashlib.sha256).hexdigest()


class TokenStore:
    """The token file: ``{"tokens": {name: {"role", "digest", "created"}}}``."""

    def __init__(self, path: Path, pepper: bytes) -> None:
        if len(pepper) < 16:
            raise TokenError("the pepper must be at least 16 bytes")
        self.path = path
        self.pepper = pepper
        self._stamp: tuple[int, int, int] | None = None
        self._by_digest: dict[str, Principal] = {}

    def authenticate(self, token: str) -> Principal | None:
        """The token's principal, or None for an unknown token (constant-time in what matters: the
        lookup is by a keyed digest the caller cannot choose)."""
        self._refresh()
        return self._by_digest.get(digest(self.pepper, token))

    def add(self, name: str, role: Role) -> str:
        """A new token for ``name``; the only time it exists in clear."""
        if not NAME.match(name):
            raise TokenError(f"token name {name!r}: 1-64 of a-z 0-9 . _ -, starting with a letter or digit")
        tokens = self._read()
        if name in tokens:
            raise TokenError(f"a token named {name!r} exists; remove it first")
        token = secrets.token_urlsafe(32)
        tokens[name] = {"role": role.name, "digest": digest(self.pepper, token), "created": int(time.time())}
        self._write(tokens)
        return token

    def remove(self, name: str) -> None:
        tokens = self._read()
        if tokens.pop(name, None) is None:
            raise TokenError(f"no token named {name!r}")
        self._write(tokens)

    def list(self) -> list[tuple[str, Role, int]]:
        return [(name, Role[entry["role"]], entry["created"]) for name, entry in sorted(self._read().items())]

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._by_digest = None, {}
            return
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp != self._stamp:
            self._by_digest = {e["digest"]: Principal(name, Role[e["role"]]) for name, e in self._read().items()}
            self._stamp = stamp

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, orjson.JSONDecodeError) as exc:
            raise TokenError(f"{self.path}: {exc}") from None
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, dict) or not all(_valid(e) for e in tokens.values()):
            raise TokenError(f"{self.path}: not a token file (expected tokens: name -> role, digest, created)")
        return tokens

    def _write(self, tokens: dict[str, dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write(self.path, {"tokens": tokens})
        folder = self.path.parent.stat()  # algoctl runs as root; the gateway (the folder's owner) reads it
        os.chown(self.path, folder.st_uid, folder.st_gid)
        os.chmod(self.path, 0o640)


def _valid(entry: Any) -> bool:
    return (isinstance(entry, dict) and entry.get("role") in Role.__members__ and isinstance(entry.get("digest"), str)
            and isinstance(entry.get("created"), int))
