"""The registry and the queue behind one small API: submit, claim, finish, history, seed.

Every write is one transaction that also appends its audit row, so the audit trail is complete by
construction. A command is submitted once per id, claimed by one worker at a time (a lease that a
dead worker's successor takes over), and finished once: executed, or failed with the reason.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

from pydantic import ValidationError

from ..runtime.config import StrategySection
from ..strategies import build
from . import database
from .database import Database, DatabaseError, Transaction, loads_json, loads_time, placeholders
from .drift import ABSENT, Drift, compare
from .records import AuditView, CommandView, StrategySpec, StrategyView
from .transitions import COMMAND_ID, VERBS, Refused, State, Status, Verb, next_state, next_status

STRATEGY_FIELDS = ("name", "kind", "engine", "process", "params", "desired_state", "auto_start", "version", "updated_at",
                   "declared")
STRATEGY_COLUMNS = ", ".join(STRATEGY_FIELDS)
COMMAND_COLUMNS = "id, seq, strategy, verb, args, actor, status, reason, created_at, claimed_by, claimed_at, finished_at"
AUDIT_COLUMNS = "seq, at, actor, action, strategy, command_id, detail"


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


@dataclass
class _Strategy:
    """A strategy's row while a transaction changes it (written back by ``_save``)."""

    name: str
    kind: str
    engine: str
    process: str
    params: dict[str, Any]
    desired_state: str
    auto_start: bool
    version: int
    updated_at: datetime
    declared: dict[str, Any] | None

    @classmethod
    def of(cls, spec: StrategySpec, now: datetime, declared: dict[str, Any] | None) -> _Strategy:
        return cls(name=spec.name, kind=spec.kind, engine=spec.engine, process=spec.process, params=dict(spec.params),
                   desired_state=spec.desired_state, auto_start=spec.auto_start, version=1, updated_at=now,
                   declared=declared)

    @classmethod
    def load(cls, row: tuple[Any, ...]) -> _Strategy:
        name, kind, engine, process, params, state, auto_start, version, updated_at, declared = row
        try:
            return cls(name=name, kind=kind, engine=engine, process=process, params=dict(loads_json(params)),
                       desired_state=state, auto_start=bool(auto_start), version=int(version),
                       updated_at=_required_time(updated_at), declared=None if declared is None else loads_json(declared))
        except (ValueError, TypeError) as exc:
            raise _damaged("strategies", name, exc) from exc

    def values(self, tx: Transaction) -> tuple[Any, ...]:
        """In STRATEGY_FIELDS' order."""
        return (self.name, self.kind, self.engine, self.process, tx.json(self.params), self.desired_state,
                self.auto_start, self.version, tx.time(self.updated_at),
                None if self.declared is None else tx.json(self.declared))

    def view(self) -> StrategyView:
        return StrategyView(name=self.name, kind=self.kind, engine=self.engine, process=self.process,
                            params=dict(self.params), desired_state=cast(State, self.desired_state),
                            auto_start=self.auto_start, version=self.version, updated_at=self.updated_at)


class Store:
    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    def open(cls, url: str, *, migrate: bool = False) -> Store:
        """The store at ``url``; migrate=True brings the schema to this code's head (the deploy does),
        otherwise a database at another revision is refused (database.SchemaError)."""
        if migrate:
            database.upgrade(url)
        db = Database(url)
        try:
            database.require_head(db)
        except BaseException:
            db.close()
            raise
        return cls(db)

    def close(self) -> None:
        self.db.close()

    # -- the registry ---------------------------------------------------------------------------

    def strategies(self) -> list[StrategyView]:
        with self.db.transaction() as tx:
            return [_Strategy.load(row).view() for row in tx.rows(f"SELECT {STRATEGY_COLUMNS} FROM strategies ORDER BY name")]

    def strategy(self, name: str) -> StrategyView | None:
        with self.db.transaction() as tx:
            row = _strategy(tx, name)
            return None if row is None else row.view()

    def create(self, spec: StrategySpec, actor: str) -> StrategyView:
        """Add a strategy at run time (version 1, audited as created). Judged as fleet.toml's would be
        (Invalid names the field); a name already taken is Exists; nothing is written either way."""
        _judge(spec.name, spec.kind, spec.params)
        now = _now()
        with self.db.transaction() as tx:
            if _strategy(tx, spec.name) is not None:
                raise Exists(f"strategy {spec.name!r} exists")
            row = _Strategy.of(spec, now, None)
            _insert(tx, row)
            _audit(tx, now, actor, "created", spec.name, None,
                   {"kind": spec.kind, "engine": spec.engine, "params": spec.params, "auto_start": spec.auto_start})
            return row.view()

    def record(self, actor: str, action: str, strategy: str | None, command_id: str | None, detail: dict[str, Any]) -> None:
        """Append an audit row for something that changed nothing here: a refused request, the kill switch."""
        with self.db.transaction() as tx:
            _audit(tx, _now(), actor, action, strategy, command_id, detail)

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
        with self.db.transaction() as tx:
            rows = {row.name: row for row in map(_Strategy.load, tx.rows(
                f"SELECT {STRATEGY_COLUMNS} FROM strategies ORDER BY name{tx.for_update}"))}
            drifts = compare(declared, [row.view() for row in rows.values()])
            for spec in declared:
                row = rows.get(spec.name)
                if row is None:
                    _insert(tx, _Strategy.of(spec, now, _declared(spec)))
                    report.added.append(spec.name)
                    _audit(tx, now, actor, "seeded", spec.name, None, {"params": spec.params})
                    continue
                mine = [d for d in drifts if d.strategy == spec.name]
                everything = reset or row.kind != spec.kind  # parameters belong to a kind: they follow it
                take = [d for d in mine if everything or not d.runtime or _edited(row.declared, d)]
                if take and not everything and not _builds(row, spec, take):
                    take = mine  # a mix of the file's and the database's parameters the strategy refuses
                keep = [d for d in mine if d not in take]
                if take:
                    _take(row, spec, take, now)
                    _audit(tx, now, actor, "reset" if reset else "seeded", spec.name, None,
                           {"changes": [str(d) for d in take]})
                if keep:
                    _audit(tx, now, actor, "adopted", spec.name, None, {"kept": [str(d) for d in keep]})
                row.declared = _declared(spec)
                _save(tx, row)
                report.applied.extend(take)
                report.kept.extend(keep)
            names = {spec.name for spec in declared}
            for name in rows:
                if name in names:
                    continue
                if reset:
                    tx.rows("DELETE FROM strategies WHERE name = ?", name)
                    report.removed.append(name)
                    _audit(tx, now, actor, "removed", name, None, {"reason": "not in fleet.toml"})
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
        with self.db.transaction() as tx:
            found = _command(tx, command_id)
            if found is None:
                row = _strategy(tx, strategy)
                if row is None:
                    known = ", ".join(name for name, in tx.rows("SELECT name FROM strategies ORDER BY name"))
                    raise UnknownStrategy(f"unknown strategy {strategy!r} (known: {known or 'none: seed the registry'})")
                _check_args(row, verb, args)
                inserted = tx.one("INSERT INTO commands (id, strategy, verb, args, actor, status, created_at) "
                                  "VALUES (?, ?, ?, ?, ?, 'pending', ?) ON CONFLICT (id) DO NOTHING RETURNING seq",
                                  command_id, strategy, verb, tx.json(args), actor, tx.time(now))
                if inserted is not None:  # else a concurrent submit of the same id got there first
                    _audit(tx, now, actor, "submitted", strategy, command_id, {"verb": verb, "args": args})
                found = _command(tx, command_id)
                assert found is not None
            if (found.strategy, found.verb, found.args) != (strategy, verb, args):
                raise IdReused(f"command id {command_id!r} is already {found.verb} {found.strategy} "
                               f"{found.args or ''}".rstrip())
            return found

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
            with self.db.transaction() as tx:
                # another of the strategy's commands ahead of it in the queue, or in a worker's hands (on
                # PostgreSQL an older sequence number can commit after a younger one was claimed)
                due = ("c.status = 'pending' AND (c.claimed_at IS NULL OR c.claimed_at < ?) AND NOT EXISTS ("
                       "SELECT 1 FROM commands AS o WHERE o.strategy = c.strategy AND o.status = 'pending' "
                       "AND o.seq != c.seq AND (o.seq < c.seq OR o.claimed_at >= ?))")
                params: list[Any] = [tx.time(expired), tx.time(expired)]
                if engines is not None:
                    hosted = sorted(engines)
                    due += (f" AND (EXISTS (SELECT 1 FROM strategies AS s WHERE s.name = c.strategy AND s.engine IN "
                            f"({placeholders(hosted)})) OR NOT EXISTS (SELECT 1 FROM strategies AS s "
                            "WHERE s.name = c.strategy))")
                    params += hosted
                skip = " FOR UPDATE OF c SKIP LOCKED" if tx.dialect == "postgresql" else ""
                claimed = tx.one(f"UPDATE commands SET claimed_by = ?, claimed_at = ? WHERE seq = (SELECT c.seq FROM "
                                 f"commands AS c WHERE {due} ORDER BY c.seq LIMIT 1{skip}) RETURNING {COMMAND_COLUMNS}",
                                 worker, tx.time(now), *params)
                if claimed is None:
                    return None
                command = _command_view(claimed)
                strategy = _strategy(tx, command.strategy)
                try:
                    if strategy is None:
                        raise Refused(f"unknown strategy {command.strategy!r}")
                    next_state(cast(State, strategy.desired_state), command.verb)
                except Refused as exc:
                    _close(tx, command, "failed", str(exc), worker, now)
                    continue
                return command

    def finish(self, command_id: str, outcome: Literal["executed", "failed"], reason: str | None, worker: str) -> CommandView:
        """Record a command's outcome once; an executed one changes its strategy by the table (a change
        the strategy's state no longer allows fails instead). The same outcome again is a no-op."""
        now = _now()
        with self.db.transaction() as tx:
            command = _command(tx, command_id, lock=True)
            if command is None:
                raise LookupError(f"no command {command_id!r}")
            if command.status == outcome:
                return command  # the same result reported twice
            next_status(command.status, outcome)
            if outcome == "executed":
                strategy = _strategy(tx, command.strategy, lock=True)
                try:
                    if strategy is None:
                        raise Refused(f"unknown strategy {command.strategy!r}")
                    _apply(strategy, command, now)
                    _save(tx, strategy)
                except Refused as exc:
                    outcome, reason = "failed", str(exc)
            return _close(tx, command, outcome, reason, worker, now)

    def command(self, command_id: str) -> CommandView | None:
        with self.db.transaction() as tx:
            return _command(tx, command_id)

    def history(self, strategy: str | None = None, limit: int = 50) -> list[CommandView]:
        """The newest commands first."""
        where, params = _of_strategy(strategy)
        with self.db.transaction() as tx:
            return [_command_view(row) for row in tx.rows(
                f"SELECT {COMMAND_COLUMNS} FROM commands{where} ORDER BY seq DESC LIMIT ?", *params, limit)]

    def audit(self, strategy: str | None = None, limit: int = 200) -> list[AuditView]:
        """The audit trail, oldest first (of the newest ``limit`` rows)."""
        where, params = _of_strategy(strategy)
        with self.db.transaction() as tx:
            rows = tx.rows(f"SELECT {AUDIT_COLUMNS} FROM audit{where} ORDER BY seq DESC LIMIT ?", *params, limit)
        return [_audit_view(row) for row in reversed(rows)]


def _of_strategy(strategy: str | None) -> tuple[str, tuple[Any, ...]]:
    return ("", ()) if strategy is None else (" WHERE strategy = ?", (strategy,))


def _strategy(tx: Transaction, name: str, *, lock: bool = False) -> _Strategy | None:
    row = tx.one(f"SELECT {STRATEGY_COLUMNS} FROM strategies WHERE name = ?{tx.for_update if lock else ''}", name)
    return None if row is None else _Strategy.load(row)


def _insert(tx: Transaction, row: _Strategy) -> None:
    tx.rows(f"INSERT INTO strategies ({STRATEGY_COLUMNS}) VALUES ({placeholders(STRATEGY_FIELDS)})", *row.values(tx))


def _save(tx: Transaction, row: _Strategy) -> None:
    name, *rest = row.values(tx)
    tx.rows(f"UPDATE strategies SET {', '.join(f'{f} = ?' for f in STRATEGY_FIELDS[1:])} WHERE name = ?", *rest, name)


def _command(tx: Transaction, command_id: str, *, lock: bool = False) -> CommandView | None:
    row = tx.one(f"SELECT {COMMAND_COLUMNS} FROM commands WHERE id = ?{tx.for_update if lock else ''}", command_id)
    return None if row is None else _command_view(row)


def _check_args(strategy: _Strategy, verb: Verb, args: dict[str, Any]) -> None:
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


def _apply(strategy: _Strategy, command: CommandView, now: datetime) -> None:
    strategy.desired_state = next_state(cast(State, strategy.desired_state), command.verb)
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


def _take(row: _Strategy, spec: StrategySpec, drifts: list[Drift], now: datetime) -> None:
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


def _builds(row: _Strategy, spec: StrategySpec, take: list[Drift]) -> bool:
    trial = replace(row, params=dict(row.params))
    _take(trial, spec, take, row.updated_at)
    try:
        build(spec.kind, spec.name, trial.params)
    except ValueError:
        return False
    return True


def _close(tx: Transaction, command: CommandView, status: Status, reason: str | None, worker: str,
           now: datetime) -> CommandView:
    tx.rows("UPDATE commands SET status = ?, reason = ?, finished_at = ? WHERE seq = ?", status, reason, tx.time(now),
            command.seq)
    _audit(tx, now, worker, status, command.strategy, command.id, {"verb": command.verb, "reason": reason})
    return replace(command, status=status, reason=reason, finished_at=now)


def _audit(tx: Transaction, now: datetime, actor: str, action: str, strategy: str | None, command_id: str | None,
           detail: dict[str, Any]) -> None:
    tx.rows(f"INSERT INTO audit ({AUDIT_COLUMNS.removeprefix('seq, ')}) VALUES (?, ?, ?, ?, ?, ?)",
            tx.time(now), actor, action, strategy, command_id, tx.json(detail))


def _command_view(row: tuple[Any, ...]) -> CommandView:
    command_id, seq, strategy, verb, args, actor, status, reason, created_at, claimed_by, claimed_at, finished_at = row
    try:
        return CommandView(id=command_id, seq=int(seq), strategy=strategy, verb=cast(Verb, verb),
                           args=dict(loads_json(args)), actor=actor, status=cast(Status, status), reason=reason,
                           created_at=_required_time(created_at), claimed_by=claimed_by, claimed_at=loads_time(claimed_at),
                           finished_at=loads_time(finished_at))
    except (ValueError, TypeError) as exc:
        raise _damaged("commands", command_id, exc) from exc


def _audit_view(row: tuple[Any, ...]) -> AuditView:
    seq, at, actor, action, strategy, command_id, detail = row
    try:
        return AuditView(seq=int(seq), at=_required_time(at), actor=actor, action=action, strategy=strategy,
                         command_id=command_id, detail=dict(loads_json(detail)))
    except (ValueError, TypeError) as exc:
        raise _damaged("audit", seq, exc) from exc


def _required_time(value: Any) -> datetime:
    when = loads_time(value)
    if when is None:
        raise ValueError("no time where one is required")
    return when


def _damaged(table: str, key: Any, exc: Exception) -> DatabaseError:
    """A row the store cannot read (edited by hand, or a disk's damage): the database's fault, so every caller
    handles it as it handles a database that fails (algo-commander waits, the gateway answers 503), naming the row."""
    return DatabaseError(f"the control-plane database holds a row it cannot read: {table} {key!r}: {exc} "
                         "(repair or delete that row)")
