"""The registry and the queue behind one small API: submit, claim, finish, history, seed.

Every write is one transaction that also appends its audit row, so the audit trail is complete by
construction. A command is submitted once per id, claimed by one worker at a time (a lease that a
dead worker's successor takes over), and finished once: executed, or failed with the reason.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import ValidationError
from sqlalchemy import Engine, exists, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from ..runtime.config import StrategySection
from ..strategies import build
from . import database
from .drift import ABSENT, Drift, compare
from .models import Audit, Command, Strategy
from .records import AuditView, CommandView, StrategySpec, StrategyView
from .transitions import COMMAND_ID, VERBS, Refused, State, Status, Verb, next_state, next_status

if TYPE_CHECKING:
    from sqlalchemy.dialects import postgresql, sqlite

Insert = Callable[[type[Command]], "sqlite.Insert | postgresql.Insert"]


def _insert_of(dialect: str) -> Insert:
    """The dialect's INSERT (with ON CONFLICT), imported for the database in use only: PostgreSQL's dialect is
    ~2 MB of RSS in algo-commander and algo-gateway that a host on the default SQLite never needs."""
    if dialect not in ("sqlite", "postgresql"):
        raise ValueError(f"the control plane runs on SQLite or PostgreSQL, not {dialect}")
    return cast(Insert, importlib.import_module(f"sqlalchemy.dialects.{dialect}").insert)


class IdReused(Refused):
    """A command id already names a different command: ids are idempotency keys, not reusable."""


class Exists(Refused):
    """A strategy of that name is already in the registry."""


class UnknownStrategy(Refused):
    """No strategy of that name in the registry."""


class Invalid(Refused):
    """Parameters (or a new strategy's fields) that fleet.toml would refuse: each problem with its field,
    e.g. ("params.fast", "must be > 0"), so an API can name the field."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{where}: {what}" for where, what in problems))
        self.problems = problems


@dataclass(frozen=True)
class SeedReport:
    added: list[str] = field(default_factory=list)
    applied: list[Drift] = field(default_factory=list)  # taken from fleet.toml
    kept: list[Drift] = field(default_factory=list)  # run-time state the database keeps (adopted)
    removed: list[str] = field(default_factory=list)


def _now() -> datetime:
    return datetime.now(UTC)


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._session = sessionmaker(engine, expire_on_commit=False)
        self._insert = _insert_of(engine.dialect.name)

    @classmethod
    def open(cls, url: str, *, migrate: bool = False) -> Store:
        """The store at ``url``; migrate=True brings the schema to this code's head (the deploy does),
        otherwise a database at another revision is refused (database.SchemaError)."""
        engine = database.connect(url)
        if migrate:
            database.upgrade(engine)
        database.require_head(engine)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        with self._session() as session, session.begin():
            yield session

    # -- the registry ---------------------------------------------------------------------------

    def strategies(self) -> list[StrategyView]:
        with self._transaction() as s:
            return [_strategy_view(row) for row in s.scalars(select(Strategy).order_by(Strategy.name))]

    def strategy(self, name: str) -> StrategyView | None:
        with self._transaction() as s:
            row = s.get(Strategy, name)
            return None if row is None else _strategy_view(row)

    def create(self, spec: StrategySpec, actor: str) -> StrategyView:
        """Add a strategy at run time (version 1, audited as created). Judged as fleet.toml's would be
        (Invalid names the field); a name already taken is Exists; nothing is written either way."""
        _judge(spec.name, spec.kind, spec.params)
        now = _now()
        with self._transaction() as s:
            if s.get(Strategy, spec.name) is not None:
                raise Exists(f"strategy {spec.name!r} exists")
            row = Strategy(name=spec.name, kind=spec.kind, engine=spec.engine, process=spec.process,
                           params=dict(spec.params), desired_state=spec.desired_state, auto_start=spec.auto_start,
                           version=1, updated_at=now, declared=None)
            s.add(row)
            s.add(_audit(now, actor, "created", spec.name, None,
                         {"kind": spec.kind, "engine": spec.engine, "params": spec.params, "auto_start": spec.auto_start}))
            s.flush()
            return _strategy_view(row)

    def record(self, actor: str, action: str, strategy: str | None, command_id: str | None, detail: dict[str, Any]) -> None:
        """Append an audit row for something that changed nothing here: a refused request, the kill switch."""
        with self._transaction() as s:
            s.add(_audit(_now(), actor, action, strategy, command_id, detail))

    def seed(self, declared: Sequence[StrategySpec], actor: str, *, reset: bool = False) -> SeedReport:
        """Bring fleet.toml's strategies into the registry; every change is audited and reported.

        New strategies are added. What only fleet.toml can change (kind, engine, process, auto_start) is
        taken from it. Run-time state (desired state, each parameter) is taken where fleet.toml changed it
        since the last seed (an edit is a deliberate change) and otherwise kept from the database (adopted:
        a change made at run time persists). ``reset`` takes everything from fleet.toml and removes the
        strategies it no longer names, which are otherwise kept.
        """
        report = SeedReport()
        now = _now()
        with self._transaction() as s:
            rows = {row.name: row for row in s.scalars(select(Strategy).with_for_update())}
            drifts = compare(declared, [_strategy_view(row) for row in rows.values()])
            for spec in declared:
                row = rows.get(spec.name)
                if row is None:
                    s.add(Strategy(name=spec.name, kind=spec.kind, engine=spec.engine, process=spec.process,
                                   params=dict(spec.params), desired_state=spec.desired_state, auto_start=spec.auto_start,
                                   version=1, updated_at=now, declared=_declared(spec)))
                    report.added.append(spec.name)
                    s.add(_audit(now, actor, "seeded", spec.name, None, {"params": spec.params}))
                    continue
                mine = [d for d in drifts if d.strategy == spec.name]
                everything = reset or row.kind != spec.kind  # parameters belong to a kind: they follow it
                take = [d for d in mine if everything or not d.runtime or _edited(row.declared, d)]
                if take and not everything and not _builds(row, spec, take):
                    take = mine  # a mix of the file's and the database's parameters the strategy refuses
                keep = [d for d in mine if d not in take]
                if take:
                    _take(row, spec, take, now)
                    s.add(_audit(now, actor, "reset" if reset else "seeded", spec.name, None,
                                 {"changes": [str(d) for d in take]}))
                if keep:
                    s.add(_audit(now, actor, "adopted", spec.name, None, {"kept": [str(d) for d in keep]}))
                row.declared = _declared(spec)
                report.applied.extend(take)
                report.kept.extend(keep)
            names = {spec.name for spec in declared}
            for name, row in rows.items():
                if name in names:
                    continue
                if reset:
                    s.delete(row)
                    report.removed.append(name)
                    s.add(_audit(now, actor, "removed", name, None, {"reason": "not in fleet.toml"}))
                else:
                    report.kept.extend(d for d in drifts if d.strategy == name)
        return report

    # -- the queue ------------------------------------------------------------------------------

    def submit(self, command_id: str, strategy: str, verb: str, args: dict[str, Any], actor: str) -> CommandView:
        """Queue a command; the same id again returns the first (a retry), a different command under
        the same id is IdReused. Bad input is Refused and nothing is written."""
        if not COMMAND_ID.match(command_id):
            raise Refused(f"command id {command_id!r} must be 1-64 characters of letters, digits and . _ : -")
        if verb not in VERBS:
            raise Refused(f"unknown verb {verb!r} (known: {', '.join(VERBS)})")
        if not 0 < len(actor) <= 128:
            raise Refused("a command needs an actor of 1-128 characters")
        now = _now()
        with self._transaction() as s:
            found = s.scalar(select(Command).where(Command.id == command_id))
            if found is None:
                row = s.get(Strategy, strategy)
                if row is None:
                    known = ", ".join(s.scalars(select(Strategy.name).order_by(Strategy.name))) or "none: seed the registry"
                    raise UnknownStrategy(f"unknown strategy {strategy!r} (known: {known})")
                _check_args(row, verb, args)
                inserted = s.scalar(self._insert(Command).values(
                    id=command_id, strategy=strategy, verb=verb, args=args, actor=actor, status="pending",
                    created_at=now).on_conflict_do_nothing(index_elements=["id"]).returning(Command.seq))
                if inserted is not None:  # else a concurrent submit of the same id got there first
                    s.add(_audit(now, actor, "submitted", strategy, command_id, {"verb": verb, "args": args}))
                found = s.scalars(select(Command).where(Command.id == command_id)).one()
            if (found.strategy, found.verb, found.args) != (strategy, verb, args):
                raise IdReused(f"command id {command_id!r} is already {found.verb} {found.strategy} "
                               f"{found.args or ''}".rstrip())
            return _command_view(found)

    def claim(self, worker: str, lease_sec: float = 60.0, engines: Collection[str] | None = None) -> CommandView | None:
        """The oldest pending command whose strategy has no older one pending, leased to ``worker``.

        One statement takes it (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite's write lock serializes),
        so two workers never take the same command, and a strategy's commands run in order. A lease
        older than ``lease_sec`` (its worker died) may be taken again. A command its strategy cannot
        take now (unknown strategy, a verb its state does not allow) fails here with the reason.
        ``engines``: only commands for the strategies of these engines (and for unknown strategies, to fail
        them), as each host's algo-commander takes those its host runs from a queue the hosts share.
        """
        while True:
            now = _now()
            expired = now - timedelta(seconds=lease_sec)
            with self._transaction() as s:
                c, other = aliased(Command), aliased(Command)
                # another of the strategy's commands ahead of it in the queue, or in a worker's hands (on
                # PostgreSQL an older sequence number can commit after a younger one was claimed)
                blocked = exists().where(other.strategy == c.strategy, other.status == "pending", other.seq != c.seq,
                                         (other.seq < c.seq) | (other.claimed_at >= expired))
                due = [c.status == "pending", c.claimed_at.is_(None) | (c.claimed_at < expired), ~blocked]
                if engines is not None:
                    hosted = exists().where(Strategy.name == c.strategy, Strategy.engine.in_(sorted(engines)))
                    due.append(hosted | ~exists().where(Strategy.name == c.strategy))
                head = (select(c.seq).where(*due)
                        .order_by(c.seq).limit(1).with_for_update(skip_locked=True, of=c))
                row = s.scalars(update(Command).where(Command.seq == head.scalar_subquery())
                                .values(claimed_by=worker, claimed_at=now).returning(Command)).one_or_none()
                if row is None:
                    return None
                strategy = s.get(Strategy, row.strategy)
                try:
                    if strategy is None:
                        raise Refused(f"unknown strategy {row.strategy!r}")
                    next_state(cast(State, strategy.desired_state), cast(Verb, row.verb))
                except Refused as exc:
                    _close(s, row, "failed", str(exc), worker, now)
                    continue
                return _command_view(row)

    def finish(self, command_id: str, outcome: Literal["executed", "failed"], reason: str | None, worker: str) -> CommandView:
        """Record a command's outcome once; an executed one changes its strategy by the table (a change
        the strategy's state no longer allows fails instead). The same outcome again is a no-op."""
        now = _now()
        with self._transaction() as s:
            row = s.scalars(select(Command).where(Command.id == command_id).with_for_update()).one_or_none()
            if row is None:
                raise LookupError(f"no command {command_id!r}")
            if row.status == outcome:
                return _command_view(row)  # the same result reported twice
            next_status(cast(Status, row.status), outcome)
            if outcome == "executed":
                strategy = s.get(Strategy, row.strategy, with_for_update=True)
                try:
                    if strategy is None:
                        raise Refused(f"unknown strategy {row.strategy!r}")
                    _apply(strategy, row, now)
                except Refused as exc:
                    outcome, reason = "failed", str(exc)
            _close(s, row, outcome, reason, worker, now)
            return _command_view(row)

    def command(self, command_id: str) -> CommandView | None:
        with self._transaction() as s:
            row = s.scalars(select(Command).where(Command.id == command_id)).one_or_none()
            return None if row is None else _command_view(row)

    def history(self, strategy: str | None = None, limit: int = 50) -> list[CommandView]:
        """The newest commands first."""
        query = select(Command).order_by(Command.seq.desc()).limit(limit)
        if strategy is not None:
            query = query.where(Command.strategy == strategy)
        with self._transaction() as s:
            return [_command_view(row) for row in s.scalars(query)]

    def audit(self, strategy: str | None = None, limit: int = 200) -> list[AuditView]:
        """The audit trail, oldest first (of the newest ``limit`` rows)."""
        query = select(Audit).order_by(Audit.seq.desc()).limit(limit)
        if strategy is not None:
            query = query.where(Audit.strategy == strategy)
        with self._transaction() as s:
            return [AuditView(seq=a.seq, at=a.at, actor=a.actor, action=a.action, strategy=a.strategy,
                              command_id=a.command_id, detail=a.detail) for a in reversed(list(s.scalars(query)))]


def _check_args(strategy: Strategy, verb: Verb, args: dict[str, Any]) -> None:
    """update_config takes {"params": {...}}, judged as fleet.toml's would be (finite numbers, then the
    strategy's own checks on the merged parameters); every other verb takes nothing."""
    if verb != "update_config":
        if args:
            raise Refused(f"{verb} takes no arguments (got {sorted(args)})")
        return
    params = args.get("params") if isinstance(args, dict) and args.keys() == {"params"} else None
    if not isinstance(params, dict) or not params:
        raise Refused('update_config takes {"params": {NAME: VALUE, ...}} with at least one parameter')
    _judge(strategy.name, strategy.kind, {**strategy.params, **params})


def _judge(name: str, kind: str, params: dict[str, Any]) -> None:
    """As fleet.toml's strategies are judged: the section's checks (name, finite numbers), then the kind's own
    constructor (Invalid names "params" for what only the constructor knows)."""
    try:
        StrategySection.model_validate({"name": name, "kind": kind, "params": params})
        build(kind, name, params)
    except ValidationError as exc:
        raise Invalid([(".".join(map(str, e["loc"])), e["msg"].removeprefix("Value error, "))
                       for e in exc.errors()]) from None
    except ValueError as exc:
        field = "kind" if str(exc).startswith("unknown strategy kind") else "params"
        raise Invalid([(field, str(exc))]) from None


def _apply(strategy: Strategy, command: Command, now: datetime) -> None:
    strategy.desired_state = next_state(cast(State, strategy.desired_state), cast(Verb, command.verb))
    if command.verb == "update_config":
        strategy.params = {**strategy.params, **command.args["params"]}
    strategy.version += 1
    strategy.updated_at = now


def _declared(spec: StrategySpec) -> dict[str, Any]:
    return {"desired_state": spec.desired_state, "params": dict(spec.params)}


def _edited(declared: dict[str, Any] | None, drift: Drift) -> bool:
    """Did fleet.toml change this run-time value since the last seed? (Never seeded before: no.)"""
    if declared is None:
        return False
    if drift.field == "desired_state":
        return bool(declared["desired_state"] != drift.toml)
    return bool(declared["params"].get(drift.field.removeprefix("params."), ABSENT) != drift.toml)


def _take(row: Strategy, spec: StrategySpec, drifts: list[Drift], now: datetime) -> None:
    params = dict(row.params)
    for d in drifts:
        if d.field.startswith("params."):
            key = d.field.removeprefix("params.")
            if d.toml is ABSENT:
                del params[key]
            else:
                params[key] = d.toml
        elif d.field == "desired_state":
            row.desired_state = spec.desired_state
    row.kind, row.engine, row.process, row.auto_start, row.params = spec.kind, spec.engine, spec.process, spec.auto_start, params
    row.version += 1
    row.updated_at = now


def _builds(row: Strategy, spec: StrategySpec, take: list[Drift]) -> bool:
    trial = Strategy(params=dict(row.params), desired_state=row.desired_state, version=row.version)
    _take(trial, spec, take, row.updated_at)
    try:
        build(spec.kind, spec.name, trial.params)
    except ValueError:
        return False
    return True


def _close(s: Session, row: Command, status: Status, reason: str | None, worker: str, now: datetime) -> None:
    row.status, row.reason, row.finished_at = status, reason, now
    s.add(_audit(now, worker, status, row.strategy, row.id, {"verb": row.verb, "reason": reason}))


def _audit(now: datetime, actor: str, action: str, strategy: str | None, command_id: str | None,
           detail: dict[str, Any]) -> Audit:
    return Audit(at=now, actor=actor, action=action, strategy=strategy, command_id=command_id, detail=detail)


def _strategy_view(row: Strategy) -> StrategyView:
    return StrategyView(name=row.name, kind=row.kind, engine=row.engine, process=row.process, params=dict(row.params),
                        desired_state=cast(State, row.desired_state), auto_start=row.auto_start, version=row.version,
                        updated_at=row.updated_at)


def _command_view(row: Command) -> CommandView:
    return CommandView(id=row.id, seq=row.seq, strategy=row.strategy, verb=cast(Verb, row.verb), args=dict(row.args),
                       actor=row.actor, status=cast(Status, row.status), reason=row.reason, created_at=row.created_at,
                       claimed_by=row.claimed_by, claimed_at=row.claimed_at, finished_at=row.finished_at)
