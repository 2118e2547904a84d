"""Who is asking, and may they: deny by default, roles in order, every mutating request audited.

REST takes ``Authorization: Bearer <token>``. The console posts its token once to /api/v1/session,
which sets it as an HttpOnly, Secure, SameSite=Strict cookie (so the page's script never holds it):
the browser sends it with the WebSocket handshake (whose Origin must be the page's own) and with
REST calls, where a mutating one must also carry the page's own Origin (a cross-site form or script
cannot). A token never reaches a log line: audit lines name the token's *name* (``ACTOR=``).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson
from fastapi import HTTPException, Request, WebSocket, status

from .ratelimit import FailureLimiter, Limited
from .tokens import Principal, Role, TokenError, TokenStore

log = logging.getLogger("algo.gateway")

COOKIE = "algo_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class TooManyFailures(Exception):
    """The request's client or token prefix has failed too often: refused before its token is checked."""

    def __init__(self, limited: Limited) -> None:
        super().__init__(f"too many failed logins: retry after {limited.retry_after} s")
        self.limited = limited


class Auth:
    def __init__(self, tokens: TokenStore | None, limiter: FailureLimiter, origins: list[str]) -> None:
        self.tokens = tokens
        self.limiter = limiter
        self.origins = origins  # besides the page's own, for a mutating request that authenticates by cookie
        # Called (in a worker thread) for a known token's mutating request refused here, after its journald
        # line: the gateway writes it to the control plane's audit table too. Requests without a valid token
        # stay in journald only, so nobody without one can grow the database.
        self.on_forbidden: Callable[[Principal, str, str, str], None] | None = None
        self.failures: Counter[str] = Counter()  # refused requests, by reason
        self.limited: Counter[str] = Counter()  # requests refused for failed logins, by the key that is empty
        self._logged = -1e9  # when a damaged token file was last logged

    def require(self, role: Role) -> Callable[[Request], Principal]:
        """A FastAPI dependency: the request's principal, when its role is at least ``role``."""

        def dependency(request: Request) -> Principal:
            mutating = request.method not in SAFE_METHODS
            token = bearer(request.headers.get("authorization"))
            by_cookie = token is None and COOKIE in request.cookies
            try:
                principal = self.login(request.cookies[COOKIE] if by_cookie else token, client_of(request),
                                       request.method, request.url.path)
            except TooManyFailures as exc:
                raise too_many(exc) from None
            if principal is None:
                self.failures["unauthenticated"] += 1
                if mutating:
                    audit(None, request.method, request.url.path, {}, "unauthenticated")
                raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a valid API token is required",
                                    headers={"WWW-Authenticate": "Bearer"})
            if by_cookie and mutating and not ("origin" in request.headers
                                               and origin_allowed(request.headers, self.origins)):
                self.failures["origin"] += 1
                self._forbidden(principal, request, "forbidden: not from the console's origin")
                raise HTTPException(status.HTTP_403_FORBIDDEN, "a change by session cookie must come from the console's "
                                                               "own origin")
            if principal.role < role:
                self.failures["forbidden"] += 1
                if mutating:
                    self._forbidden(principal, request, f"forbidden: needs {role.name}")
                raise HTTPException(status.HTTP_403_FORBIDDEN, f"{principal.role.name} may not do this: needs {role.name}")
            request.state.principal = principal
            return principal

        return dependency

    def _forbidden(self, principal: Principal, request: Request, result: str) -> None:
        audit(principal, request.method, request.url.path, {}, result)
        if self.on_forbidden is not None:
            self.on_forbidden(principal, request.method, request.url.path, result)

    def login(self, token: object, client: str, method: str, path: str) -> Principal | None:
        """The principal of a presented token (None for none or a wrong one). A wrong one counts against
        its client and its prefix; over the limit, TooManyFailures, audited once per window."""
        if not isinstance(token, str) or not token:
            return None
        keys = self.limiter.keys(client, token)
        limited = self.limiter.check(keys)
        if limited is not None:
            self.limited[limited.by] += 1
            if limited.first:
                audit(None, method, path, {"client": client, "limit": limited.by},
                      f"rate limited: too many failed logins, retry after {limited.retry_after} s")
            raise TooManyFailures(limited)
        principal = self.from_token(token)
        if principal is None:
            self.limiter.failed(keys)
        return principal

    def from_token(self, token: object) -> Principal | None:
        if self.tokens is None or not isinstance(token, str) or not token:
            return None
        try:
            return self.tokens.authenticate(token)
        except TokenError as exc:  # a damaged token file: nobody gets in until it is fixed
            self.failures["token_file"] += 1
            if time.monotonic() - self._logged > 60:
                self._logged = time.monotonic()
                log.error("refusing every token: %s", exc)
            return None


def bearer(header: str | None) -> str | None:
    scheme, _, token = (header or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def client_of(request: Request | WebSocket) -> str:
    """Who is asking: nginx's X-Real-IP (the gateway's socket is reachable by nginx and the fleet's
    group only), else the peer; a Unix-socket peer has no address."""
    return request.headers.get("x-real-ip") or (request.client.host if request.client else "") or "local"


def too_many(exc: TooManyFailures) -> HTTPException:
    return HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, str(exc),
                         headers={"Retry-After": str(exc.limited.retry_after)})


def origin_allowed(headers: Mapping[str, str], extra: list[str]) -> bool:
    """No Origin (not a browser), the page's own (https://<Host>), or one the config lists."""
    origin = headers.get("origin")
    if origin is None:
        return True
    if origin in extra:
        return True
    parts = urlsplit(origin)
    return parts.scheme == "https" and bool(parts.netloc) and parts.netloc == headers.get("host")


def audit(principal: Principal | None, method: str, path: str, args: dict[str, Any], result: str,
          trace: str | None = None, strategy: str | None = None) -> None:
    """One journald line per mutating request: who, what, with which arguments, and how it ended."""
    actor = principal.name if principal else "(unauthenticated)"
    try:
        text = orjson.dumps(args).decode()
    except TypeError:  # what orjson cannot write (an int past 64 bits, refused as a parameter) is still logged
        text = json.dumps(args, default=str)
    log.info("audit: %s %s %s by %s: %s", method, path, text, actor, result,
             extra={"ACTOR": actor, "ROLE": principal.role.name if principal else None, "VERB": f"{method} {path}",
                    "ARGS": text, "RESULT": result, "TRACE_ID": trace, "STRATEGY": strategy})
