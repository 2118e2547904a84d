"""Who may call: one API key, its secret, and the access tokens issued so far.

Token expiry (Kite's daily 06:00 reset) is emulated by forgetting every access token: each
authenticated route answers 403 TokenException until ``generate_session`` makes a new one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading

from .errors import KiteError

INVALID_TOKEN = "Incorrect `api_key` or `access_token`."


class Sessions:
    """Thread-safe: tests expire tokens while server threads check them."""

    def __init__(self, api_key: str, api_secret: str, access_token: str) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self._lock = threading.Lock()
        self._tokens = {access_token}
        self._used_request_tokens: set[str] = set()

    def authorize(self, api_key: str, access_token: str) -> bool:
        with self._lock:
            return api_key == self.api_key and access_token in self._tokens

    def check_header(self, header: str | None) -> None:
        """``Authorization: token api_key:access_token``, or 403 TokenException."""
        scheme, _, credentials = (header or "").partition(" ")
        api_key, _, access_token = credentials.partition(":")
        if scheme != "token" or not self.authorize(api_key, access_token):
            raise KiteError("TokenException", INVALID_TOKEN, 403)

    def create(self, api_key: str, request_token: str, checksum: str) -> str:
        """Exchange a request token (any string, once) for a new access token, as POST /session/token."""
        if api_key != self.api_key:
            raise KiteError("InputException", "Invalid `api_key`.", 400)
        if not request_token:
            raise KiteError("InputException", "Missing `request_token`.", 400)
        expected = hashlib.sha256((api_key + request_token + self.api_secret).encode()).hexdigest()
        if not hmac.compare_digest(expected, checksum):
            raise KiteError("TokenException", "Invalid `checksum`.", 403)
        with self._lock:
            if request_token in self._used_request_tokens:
                raise KiteError("TokenException", "Token is invalid or has expired.", 403)
            self._used_request_tokens.add(request_token)
            token = secrets.token_hex(16)
            self._tokens.add(token)
            return token

    def invalidate(self, api_key: str, access_token: str) -> None:
        if api_key != self.api_key:
            raise KiteError("InputException", "Invalid `api_key`.", 400)
        with self._lock:
            self._tokens.discard(access_token)

    def expire_all(self) -> None:
        with self._lock:
            self._tokens.clear()
