"""The strategy routes: the registry and the command queue of the control plane, over REST.

Viewers read, operators command (pause, resume, start, stop, restart, new parameters), admins create.
A command is queued (202 with it, status pending) for whatever carries it out, and read back by id
until it is executed or failed. The client's ``id`` makes a retry safe: the same id returns the same
command. Every mutating request is audited twice: in journald (``ACTOR=``, ``STRATEGY=``) and in the
database's audit table (the store writes ``created`` / ``submitted`` in the same transaction as the
change; a request refused here is written as ``refused`` with the reason).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import HTTPException, Query, Request, status
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from ..control_plane.records import CommandView, StrategySpec, StrategyView
from ..control_plane.store import Exists, IdReused, Invalid, Store, UnknownStrategy
from ..control_plane.transitions import Refused, State, Status, Verb
from .api import Problem, who
from .auth import audit
from .control import Unavailable
from .tokens import Principal

if TYPE_CHECKING:
    from .main import GatewayDaemon

NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,31}$"  # as fleet.toml's [[daemons.*.strategies]] name
COMMAND_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"  # as the store's
Name = Annotated[str, PathParam(pattern=NAME_PATTERN, description="the strategy's name")]
CommandId = Annotated[str, Field(pattern=COMMAND_ID_PATTERN, description="idempotency key: the same id again returns "
                                                                          "the first command (default: a new one)")]


class StrategyOut(BaseModel):
    name: str
    kind: str
    engine: str = Field(description="the engine section it belongs to")
    process: Literal["engine", "own"] = Field(description="hosted by its engine, or its own algo-strategy@ process")
    params: dict[str, Any]
    desired_state: State = Field(description="what the last executed command asked for")
    auto_start: bool
    version: int = Field(description="+1 on every change")
    updated_at: datetime


class StrategyCreate(BaseModel):
    """A strategy hosted by its engine, created stopped: a ``start`` command runs it. (An own process needs
    a unit and a metrics port, which only fleet.toml gives.)"""

    model_config = {"extra": "forbid"}
    name: str = Field(pattern=NAME_PATTERN)
    kind: str = Field(min_length=1, max_length=64, description="ema_crossover, rsi_reversion, short_straddle, model")
    engine: str = Field(min_length=1, max_length=32, description="an engine of the fleet: fno, equity, options")
    params: dict[str, Any] = {}
    auto_start: bool = Field(False, description="start it with the fleet")


class ParamsChange(BaseModel):
    model_config = {"extra": "forbid"}
    params: dict[str, Any] = Field(min_length=1, description="the parameters to change; the others are kept")
    id: CommandId | None = None


class CommandRequest(BaseModel):
    model_config = {"extra": "forbid"}
    verb: Literal["start", "stop", "restart", "pause", "resume"] = Field(
        description="new parameters: PATCH /strategies/{name}/params")
    id: CommandId | None = None


class CommandOut(BaseModel):
    id: str
    seq: int = Field(description="its place in the queue")
    strategy: str
    verb: Verb
    args: dict[str, Any]
    actor: str = Field(description="the token's name")
    status: Status = Field(description="pending until carried out; then executed, or failed with the reason")
    reason: str | None
    created_at: datetime
    claimed_by: str | None
    claimed_at: datetime | None
    finished_at: datetime | None


RouteFactory = Callable[..., Callable[[Any], Any]]
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": Problem, "description": "the control plane's database is unavailable: nothing was written"}}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "no such strategy"}}
CONFLICT: dict[int | str, dict[str, Any]] = {409: {"model": Problem, "description": "the name or id is taken"}}


def add_routes(route: RouteFactory, gw: GatewayDaemon, operator: Callable[[Request], Principal],
               admin: Callable[[Request], Principal]) -> None:
    """Called by api.create_app (which this module imports from, so not at its import time)."""
    async def read(fn: Callable[[Store], Any]) -> Any:
        try:
            return await gw.control.call(fn)
        except Unavailable as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"the control plane's database is unavailable: "
                                                                     f"{exc}") from None

    async def write(request: Request, strategy: str, command_id: str | None, args: dict[str, Any],
                    fn: Callable[[Store], Any], describe: Callable[[Any], str]) -> Any:
        """Run one store write, audited in journald and (when refused) in the database."""
        principal = who(request)
        verb = f"{request.method} {request.url.path}"
        try:
            done = await gw.control.call(fn)
        except Unavailable as exc:
            audit(principal, request.method, request.url.path, args, f"failed: database unavailable: {exc}",
                  strategy=strategy)
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"the control plane's database is unavailable: "
                                                                     f"{exc}; nothing was written") from None
        except Refused as exc:
            audit(principal, request.method, request.url.path, args, f"refused: {exc}", strategy=strategy)
            await asyncio.to_thread(gw.record, principal, "refused", strategy, command_id,
                                    {"request": verb, "args": args, "reason": str(exc)})
            raise _refusal(exc) from None
        audit(principal, request.method, request.url.path, args, describe(done), strategy=strategy)
        return done

    @route("GET", "/strategies", response_model=list[StrategyOut], summary="the strategy registry",
           responses=UNAVAILABLE)
    async def strategies() -> list[StrategyOut]:
        return [_strategy(v) for v in await read(lambda store: store.strategies())]

    @route("GET", "/strategies/{name}", response_model=StrategyOut, summary="one strategy",
           responses={**NOT_FOUND, **UNAVAILABLE})
    async def strategy(name: Name) -> StrategyOut:
        found = await read(lambda store: store.strategy(name))
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown strategy {name!r}")
        return _strategy(found)

    @route("POST", "/strategies", response_model=StrategyOut, status_code=status.HTTP_201_CREATED, role=admin,
           summary="add a strategy (admin); invalid fields are 422, naming the field, and nothing is written",
           responses={**CONFLICT, **UNAVAILABLE})
    async def create(body: StrategyCreate, request: Request) -> StrategyOut:
        engines = [name for name, _ in gw.config.daemons.engines()]
        spec = StrategySpec(name=body.name, kind=body.kind, engine=body.engine, process="engine", params=body.params,
                            desired_state="stopped", auto_start=body.auto_start)
        actor = who(request).name

        def add(store: Store) -> StrategyView:
            if body.engine not in engines:
                raise Invalid([("engine", f"unknown engine {body.engine!r} (known: {', '.join(engines)})")])
            return store.create(spec, actor)

        created: StrategyView = await write(request, body.name, None, body.model_dump(), add, lambda _: "created")
        return _strategy(created)

    @route("PATCH", "/strategies/{name}/params", response_model=CommandOut, status_code=status.HTTP_202_ACCEPTED,
           role=operator, summary="queue new parameters (update_config); judged now as fleet.toml's would be",
           responses={**NOT_FOUND, **CONFLICT, **UNAVAILABLE})
    async def change_params(name: Name, body: ParamsChange, request: Request) -> CommandOut:
        return await submit(request, name, body.id, "update_config", {"params": body.params})

    @route("POST", "/strategies/{name}/commands", response_model=CommandOut, status_code=status.HTTP_202_ACCEPTED,
           role=operator, summary="queue a command; the same id again returns the first command",
           responses={**NOT_FOUND, **CONFLICT, **UNAVAILABLE})
    async def command(name: Name, body: CommandRequest, request: Request) -> CommandOut:
        return await submit(request, name, body.id, body.verb, {})

    async def submit(request: Request, name: str, command_id: str | None, verb: Verb, args: dict[str, Any]) -> CommandOut:
        cid = command_id or f"gw-{uuid.uuid4().hex}"
        actor = who(request).name
        queued: CommandView = await write(
            request, name, cid, {"id": cid, "verb": verb, **args},
            lambda store: store.submit(cid, name, verb, args, actor), lambda c: f"queued {c.id}: {c.status}")
        return _command(queued)

    @route("GET", "/commands", response_model=list[CommandOut], summary="command history, newest first",
           responses=UNAVAILABLE)
    async def history(strategy: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[CommandOut]:
        return [_command(c) for c in await read(lambda store: store.history(strategy, limit))]

    @route("GET", "/commands/{command_id}", response_model=CommandOut, summary="one command: its status and reason",
           responses={404: {"model": Problem, "description": "no such command"}, **UNAVAILABLE})
    async def one_command(command_id: Annotated[str, PathParam(pattern=COMMAND_ID_PATTERN)]) -> CommandOut:
        found = await read(lambda store: store.command(command_id))
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no command {command_id!r}")
        return _command(found)


def _refusal(exc: Refused) -> Exception:
    if isinstance(exc, Invalid):  # FastAPI's own 422 shape, so a client reads one format
        return RequestValidationError([{"type": "value_error", "loc": ["body", *where.split(".")], "msg": what}
                                       for where, what in exc.problems])
    if isinstance(exc, UnknownStrategy):
        return HTTPException(status.HTTP_404_NOT_FOUND, str(exc))
    if isinstance(exc, IdReused | Exists):
        return HTTPException(status.HTTP_409_CONFLICT, str(exc))
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc))


def _strategy(v: StrategyView) -> StrategyOut:
    return StrategyOut(name=v.name, kind=v.kind, engine=v.engine, process="own" if v.process == "own" else "engine",
                       params=v.params, desired_state=v.desired_state, auto_start=v.auto_start, version=v.version,
                       updated_at=v.updated_at)


def _command(c: CommandView) -> CommandOut:
    return CommandOut(id=c.id, seq=c.seq, strategy=c.strategy, verb=c.verb, args=c.args, actor=c.actor, status=c.status,
                      reason=c.reason, created_at=c.created_at, claimed_by=c.claimed_by, claimed_at=c.claimed_at,
                      finished_at=c.finished_at)

