"""The HTTP and WebSocket API: /api/v1 (REST, OpenAPI at /api/v1/openapi.json) and /ws/events.

Every REST route sits behind a role (viewer unless it says otherwise): a route added without one is
still refused to a request without a token. Response models are typed, so the published schema is
what the routes return. /metrics is on the gateway's socket for nginx's loopback listener only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException, Query, Request, Response, WebSocket, status
from fastapi.responses import PlainTextResponse
from prometheus_client import generate_latest
from pydantic import BaseModel, Field
from starlette.websockets import WebSocketDisconnect, WebSocketState

from ..runtime import wire
from ..runtime.envelope import CONTROL_KILL_SWITCH
from . import journal
from .auth import COOKIE, TooManyFailures, audit, client_of, origin_allowed, too_many
from .stream import TOPICS
from .tokens import Principal, Role

if TYPE_CHECKING:
    from .main import GatewayDaemon

PREFIX = "/api/v1"
FIRST_MESSAGE_SEC = 5.0  # a WebSocket must authenticate this soon after connecting
# WebSocket close codes: 1008 policy violation (not allowed), 1013 try again later (dropped as too slow)
WS_POLICY, WS_SLOW = 1008, 1013


class DaemonStatus(BaseModel):
    host: str
    unit: str
    state: str = Field(description="waiting (expected, not heard yet), alive or silent")
    expected: bool = Field(description="the config runs it on this host")
    healthy: bool | None = Field(description="its own health check, from its last heartbeat")
    reason: str | None
    pid: int | None
    uptime_sec: float | None
    tick_age_sec: float | None
    last_seen: float | None = Field(description="wall clock of its last heartbeat, seconds since the epoch")


class KillSwitchState(BaseModel):
    engaged: bool
    reason: str
    by: str = Field(description="the event's source")
    trace: str
    ts: int = Field(description="ns since the epoch")


class FleetStatus(BaseModel):
    host: str
    bus_connected: bool
    daemons: list[DaemonStatus]
    kill_switch: KillSwitchState | None = Field(description="the last control.kill_switch seen since the gateway started")
    stream_seq: int = Field(description="the WebSocket stream's last sequence number")


class Order(BaseModel):
    """An order's latest row of orders.csv."""

    ts: str
    client_id: str
    order_id: str
    engine: str
    strategy: str
    symbol: str
    instrument_type: str
    side: str
    quantity: str
    order_type: str
    limit_price: str
    status: str
    filled_quantity: str
    average_price: str
    reason: str
    trace: str


class Fill(BaseModel):
    """A row of fills.csv."""

    ts: str
    exchange_time: str
    fill_id: str
    order_id: str
    client_id: str
    engine: str
    strategy: str
    symbol: str
    instrument_type: str
    side: str
    quantity: str
    price: str
    trace: str


class Position(BaseModel):
    engine: str
    strategy: str
    symbol: str
    quantity: int
    average: float
    mark: float
    unrealised: float


class PnlLine(BaseModel):
    realised: float
    unrealised: float
    gross_pnl: float
    charges: float
    net_pnl: float
    fills: int
    turnover: float
    trades: int
    wins: int
    win_rate: float
    open_quantity: int


class Pnl(BaseModel):
    day: str
    realised: float
    unrealised: float
    gross_pnl: float
    net_pnl: float
    max_drawdown: float
    by_engine: dict[str, PnlLine]
    by_strategy: dict[str, PnlLine]
    by_symbol: dict[str, PnlLine]


class KillSwitchRequest(BaseModel):
    model_config = {"extra": "forbid"}
    engage: bool
    reason: str = Field(min_length=1, max_length=200)


class KillSwitchSent(BaseModel):
    engage: bool
    trace: str = Field(description="search the journal by it: journalctl TRACE_ID=...")


class Whoami(BaseModel):
    name: str
    role: str


class SessionRequest(BaseModel):
    model_config = {"extra": "forbid"}
    token: str = Field(min_length=1, max_length=200)


class Problem(BaseModel):
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {401: {"model": Problem}, 403: {"model": Problem}}
Day = Annotated[date | None, Query(description="journal day, YYYY-MM-DD (default: today, IST)")]


def create_app(gw: GatewayDaemon) -> FastAPI:
    app = FastAPI(title="algo-fleet gateway", version="1", openapi_url=f"{PREFIX}/openapi.json", docs_url=None,
                  redoc_url=None)
    from .strategies import add_routes  # it imports this module's models

    viewer, operator, admin = (gw.auth.require(role) for role in (Role.viewer, Role.operator, Role.admin))

    def route(method: str, path: str, *, role: Callable[[Request], Principal] = viewer,
              responses: dict[int | str, dict[str, Any]] | None = None, **kwargs: Any) -> Callable[[Any], Any]:
        """Every REST route: viewer at least (deny by default), 401 and 403 documented."""
        return app.api_route(PREFIX + path, methods=[method], dependencies=[Depends(viewer), Depends(role)],
                             responses={**ERRORS, **(responses or {})}, **kwargs)

    async def read_day(fn: Any, day: date | None, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, gw.journal_dir, day or journal.today(), *args)
        except journal.DayNotFound as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
        except journal.ReportError as exc:
            raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, f"the journal cannot be read: {exc}") from None

    @route("GET", "/whoami", response_model=Whoami, summary="the token's name and role")
    async def whoami(request: Request) -> Whoami:
        principal = who(request)
        return Whoami(name=principal.name, role=principal.role.name)

    @route("GET", "/fleet", response_model=FleetStatus, summary="every daemon's liveness and health, from its heartbeats")
    async def fleet() -> FleetStatus:
        return gw.fleet_status()

    @route("GET", "/orders", response_model=list[Order], summary="each order's latest state on a journal day")
    async def orders(day: Day = None) -> list[Order]:
        return [Order(**row) for row in await read_day(journal.orders, day)]

    @route("GET", "/fills", response_model=list[Fill], summary="the fills of a journal day")
    async def fills(day: Day = None) -> list[Fill]:
        return [Fill(**row) for row in await read_day(journal.fills, day)]

    @route("GET", "/positions", response_model=list[Position], summary="open positions, marked to the day's last ticks")
    async def positions(day: Day = None) -> list[Position]:
        report = await read_day(journal.report, day, gw.config.eod.product)
        return [Position(**p) for p in report["positions"]]

    @route("GET", "/pnl", response_model=Pnl, summary="P&L of a journal day so far, as algo-eod computes it")
    async def pnl(day: Day = None) -> Pnl:
        report = await read_day(journal.report, day, gw.config.eod.product)
        totals = report["totals"]
        return Pnl(day=report["day"], **{k: totals[k] for k in ("realised", "unrealised", "gross_pnl", "net_pnl",
                                                                  "max_drawdown")},
                   by_engine=report["by_engine"], by_strategy=report["by_strategy"], by_symbol=report["by_symbol"])

    @route("POST", "/kill-switch", response_model=KillSwitchSent, status_code=status.HTTP_202_ACCEPTED,
           summary="engage or release the fleet-wide kill switch (operator)", role=operator,
           responses={503: {"model": Problem, "description": "the bus is unreachable: nothing was sent"}})
    async def kill_switch(body: KillSwitchRequest, request: Request, background: BackgroundTasks) -> KillSwitchSent:
        principal, args = who(request), body.model_dump()
        if not gw.bus.connected:
            audit(principal, request.method, request.url.path, args, "failed: bus unreachable")
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the bus is unreachable: nothing was sent")
        event = gw.bus.publish(CONTROL_KILL_SWITCH, {"engage": body.engage,
                                                     "reason": f"{body.reason} ({principal.name} via gateway)"})
        audit(principal, request.method, request.url.path, args, "sent", event.trace)
        # after the answer, in a worker thread: a slow database must not delay the kill switch's
        background.add_task(gw.record, principal, "kill_switch", None, None, {**args, "trace": event.trace})
        return KillSwitchSent(engage=body.engage, trace=event.trace)

    add_routes(route, gw, operator, admin)

    @app.post(f"{PREFIX}/session", status_code=status.HTTP_204_NO_CONTENT, responses={401: {"model": Problem}},
              summary="exchange a token for a cookie: how a browser authenticates its WebSocket")
    async def session(body: SessionRequest, request: Request, response: Response) -> None:
        try:
            principal = gw.auth.login(body.token, client_of(request), request.method, request.url.path)
        except TooManyFailures as exc:
            raise too_many(exc) from None
        if principal is None:
            gw.auth.failures["unauthenticated"] += 1
            audit(None, request.method, request.url.path, {}, "unauthenticated")
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "not a valid API token")
        response.set_cookie(COOKIE, body.token, httponly=True, secure=True, samesite="strict", path="/")
        audit(principal, request.method, request.url.path, {}, "session cookie set")

    @app.delete(f"{PREFIX}/session", status_code=status.HTTP_204_NO_CONTENT,
                summary="log out: the browser forgets the session cookie")
    async def logout(request: Request, response: Response) -> None:
        response.delete_cookie(COOKIE, httponly=True, secure=True, samesite="strict", path="/")
        audit(gw.auth.from_token(request.cookies.get(COOKIE)), request.method, request.url.path, {},
              "session cookie cleared")

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(gw.metrics.registry).decode(),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.websocket("/ws/events")
    async def events(ws: WebSocket) -> None:
        await stream_events(gw, ws)

    return app


def who(request: Request) -> Principal:
    """The principal the route's role check found (auth.Auth.require keeps it on the request)."""
    principal: Principal = request.state.principal
    return principal


async def stream_events(gw: GatewayDaemon, ws: WebSocket) -> None:
    """The WebSocket protocol, one JSON object per message.

    client -> {"token"?: str, "topics": [pattern, ...], "since"?: seq}   (the first message; token unless
              the session cookie came with the handshake)
    server -> {"type": "subscribed", "topics": [...], "seq": last seq}, then {"type": "event", "seq", "topic",
              "event"} per event, {"type": "gap", ...} when ``since`` is older than the ring; a client dropped
              as too slow is closed with 1013 and should resume with ``since``.
    """
    if not origin_allowed(ws.headers, gw.section.origins):
        gw.auth.failures["origin"] += 1
        await ws.close(WS_POLICY, "origin not allowed")  # before accept(): the handshake gets HTTP 403
        return
    peer = client_of(ws)
    try:
        principal = gw.auth.login(ws.cookies.get(COOKIE), peer, "WS", ws.url.path)
    except TooManyFailures as exc:
        await ws.close(WS_POLICY, str(exc))  # before accept(): the handshake gets HTTP 403
        return
    await ws.accept()
    try:
        first = orjson.loads(await asyncio.wait_for(ws.receive_text(), FIRST_MESSAGE_SEC))
        if not isinstance(first, dict):
            raise ValueError("expected a JSON object")
        principal = principal or gw.auth.login(first.get("token"), peer, "WS", ws.url.path)
        if principal is None:
            gw.auth.failures["unauthenticated"] += 1
            await ws.close(WS_POLICY, "a valid API token is required")
            return
        topics, since = _subscription(first)
    except (TimeoutError, ValueError, orjson.JSONDecodeError, TooManyFailures) as exc:
        await ws.close(WS_POLICY, str(exc)[:120] or "expected a subscription")
        return
    except WebSocketDisconnect:
        return
    client = gw.stream.attach(topics, since)
    await ws.send_text(orjson.dumps({"type": "subscribed", "topics": topics, "seq": gw.stream.seq}).decode())
    pump = asyncio.create_task(gw.stream.pump(client, ws.send_text, gw.section.ws_send_timeout_sec))
    listen = asyncio.create_task(_until_closed(ws))
    try:
        await asyncio.wait({pump, listen}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gw.stream.detach(client)
        for task in (pump, listen):
            task.cancel()
        await asyncio.gather(pump, listen, return_exceptions=True)
    if client.dropped is not None and ws.application_state is WebSocketState.CONNECTED:
        with contextlib.suppress(TimeoutError, RuntimeError, WebSocketDisconnect):
            await asyncio.wait_for(ws.close(WS_SLOW, f"dropped: {client.dropped}; resume with since"), 0.5)


def _subscription(message: dict[str, Any]) -> tuple[tuple[str, ...], int | None]:
    topics = message.get("topics", list(TOPICS))
    if not isinstance(topics, list) or not topics or not all(isinstance(t, str) for t in topics):
        raise ValueError("topics: expected a non-empty list of topic patterns")
    for topic in topics:
        try:
            wire.check_pattern(topic.encode())
        except wire.ProtocolError as exc:
            raise ValueError(f"topics: {exc}") from None
    since = message.get("since")
    if since is not None and (isinstance(since, bool) or not isinstance(since, int) or since < 0):
        raise ValueError("since: expected a sequence number (an integer >= 0)")
    return tuple(topics), since


async def _until_closed(ws: WebSocket) -> None:
    """The client sends nothing after subscribing; reading is how its close is noticed."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            await ws.receive()
            if ws.client_state is WebSocketState.DISCONNECTED:
                return
