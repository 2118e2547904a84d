"""The control plane's store, against SQLite (WAL) and a real PostgreSQL server alike: migrations, the
idempotent queue, concurrent claims, the transition table, seeding and drift, and `algoctl strategy`."""

from __future__ import annotations

import getpass
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from daemons.algoctl.main import main as algoctl
from daemons.control_plane import database, schema
from daemons.control_plane.drift import compare, declared, render
from daemons.control_plane.records import StrategySpec
from daemons.control_plane.store import Exists, IdReused, Invalid, SeedReport, Store
from daemons.control_plane.transitions import STATES, STRATEGY_TRANSITIONS, VERBS, Refused
from daemons.runtime.config import ConfigError, load_config
from tests import postgres
from tests.conftest import REPO

PAPER = REPO / "configs" / "paper.toml"
TABLES = {"strategies", "commands", "audit"}


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[postgres.Cluster]:
    postgres.require_postgres()
    with postgres.cluster() as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state/control/control.db"  # the directory is created
    cluster: postgres.Cluster = request.getfixturevalue("pg_cluster")
    return cluster.create_database()


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    s = Store.open(url, migrate=True)
    s.seed(declared(load_config(PAPER)), "deploy")
    try:
        yield s
    finally:
        s.close()


def spec(name: str, state: str = "running", **params: object) -> StrategySpec:
    return StrategySpec(name=name, kind="ema_crossover", engine="fno", process="engine",
                        params={"underlying": "NIFTY", "quantity": 75, "fast": 9, "slow": 21, **params},
                        desired_state=state, auto_start=state == "running")  # type: ignore[arg-type]


def run_next(store: Store) -> str | None:
    """What a dispatcher does with the next command: claim it and report it executed."""
    claimed = store.claim("worker")
    if claimed is None:
        return None
    return store.finish(claimed.id, "executed", None, "worker").status


# -- migrations -----------------------------------------------------------------------------------

def test_migrations_go_up_and_down_and_match_the_schema(url: str) -> None:
    db = database.Database(url)
    engine = database.migration_engine(url)
    try:
        with pytest.raises(database.SchemaError, match="revision none"):
            database.require_head(db)
        database.upgrade(url)
        assert database.current(db) == database.HEAD
        assert set(inspect(engine).get_table_names()) >= TABLES
        with engine.connect() as conn:  # the schema the migrations build is the declared one (no drift between them)
            assert compare_metadata(MigrationContext.configure(conn), schema.metadata) == []
        database.downgrade(url, "0001")  # one step: SQLite drops the column by copying the table (batch mode)
        assert "declared" not in {c["name"] for c in inspect(engine).get_columns("strategies")}
        database.upgrade(url)
        assert "declared" in {c["name"] for c in inspect(engine).get_columns("strategies")}
        database.downgrade(url, "base")
        assert not TABLES & set(inspect(engine).get_table_names())
        assert database.current(db) is None
        database.upgrade(url)
        assert database.current(db) == database.HEAD
    finally:
        db.close()
        engine.dispose()


def test_the_head_the_daemons_check_is_the_migrations_head_and_using_the_store_needs_no_sqlalchemy(url: str) -> None:
    """algo-commander and the gateway use the database through its driver and only check the revision:
    SQLAlchemy (~12 MB of RSS, ~17 with its ORM) and Alembic (with Mako, ~25 MB) are for the deploy that
    migrates. So the head they check is a constant, and a new migration must move it."""
    assert ScriptDirectory(str(database.MIGRATIONS)).get_current_head() == database.HEAD
    code = ("import sys; from daemons.control_plane import database; from daemons.control_plane.store import Store; "
            "import daemons.commander.main; db = database.Database(sys.argv[1]); print(database.current(db)); "
            "db.close(); s = Store.open(sys.argv[1]); s.submit('op-1', 'ema-nifty', 'pause', {}, 'alice'); "
            "print(s.claim('w').id); s.close(); print(sorted(m for m in ('alembic', 'sqlalchemy') if m in sys.modules))")
    fresh = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True, check=False)
    assert "revision none" in fresh.stderr  # current() said None, then the store refused the unmigrated database
    assert fresh.stdout.split() == ["None"], fresh.stderr
    seeded = Store.open(url, migrate=True)
    seeded.seed(declared(load_config(PAPER)), "deploy")
    seeded.close()
    out = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [database.HEAD, "op-1", "[]"], out.stderr


def test_an_unmigrated_database_is_refused_until_migrated(url: str) -> None:
    with pytest.raises(database.SchemaError, match="algoctl config seed"):
        Store.open(url)
    Store.open(url, migrate=True).close()
    Store.open(url).close()


def test_sqlite_runs_in_wal_mode_with_its_pragmas(tmp_path: Path) -> None:
    db = database.Database(f"sqlite:///{tmp_path}/c.db")
    with db.transaction() as tx:
        pragmas = {p: tx.rows(f"PRAGMA {p}")[0][0] for p in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")}
    db.close()
    assert pragmas == {"journal_mode": "wal", "synchronous": 1, "busy_timeout": database.SQLITE_BUSY_TIMEOUT_MS,
                       "foreign_keys": 1}


def test_rows_sqlalchemy_wrote_read_the_same(url: str) -> None:
    """Databases migrated and filled before the store spoke to the driver itself: SQLAlchemy wrote their JSON
    and times (on SQLite, text), and the store reads them, and compares the queue's leases with them, alike."""
    database.upgrade(url)
    engine = database.migration_engine(url)
    written = datetime(2026, 12, 4, 9, 15, 0, 123456, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(schema.strategies.insert().values(
            name="old", kind="ema_crossover", engine="fno", process="engine", desired_state="running", auto_start=True,
            version=3, updated_at=written, declared=None,
            params={"underlying": "NIFTY", "quantity": 75, "fast": 9, "slow": 21}))
        conn.execute(schema.commands.insert().values(
            id="c-old", strategy="old", verb="pause", args={}, actor="alice", status="pending", created_at=written,
            claimed_by="dead-worker", claimed_at=written))
    engine.dispose()
    store = Store.open(url)
    try:
        old = store.strategy("old")
        assert old is not None and (old.params["slow"], old.version, old.updated_at) == (21, 3, written)
        command = store.command("c-old")
        assert command is not None and (command.created_at, command.claimed_at, command.args) == (written, written, {})
        assert store.claim("w", lease_sec=10**9) is None  # leased "now" as far as a billion seconds go
        taken = store.claim("w", lease_sec=60)  # the dead worker's lease ran out long ago
        assert taken is not None and taken.id == "c-old" and taken.claimed_at is not None and taken.claimed_at > written
    finally:
        store.close()


def test_a_row_the_store_cannot_read_is_a_database_error_naming_it_and_loses_nothing(tmp_path: Path) -> None:
    """A row edited by hand or damaged on disk (SQLite keeps JSON and times as text) is the database's fault:
    DatabaseError naming the table and the row, which algo-commander and the gateway treat as a database that
    fails, never a crash; repaired, everything reads again."""
    url = f"sqlite:///{tmp_path}/c.db"
    store = Store.open(url, migrate=True)
    try:
        store.seed(declared(load_config(PAPER)), "deploy")
        store.submit("a", "ema-nifty", "pause", {}, "alice")
        with store.db.transaction() as tx:
            tx.rows("UPDATE commands SET args = '{not json' WHERE id = 'a'")
            tx.rows("UPDATE strategies SET updated_at = 'yesterday' WHERE name = 'rsi-infy'")
        with pytest.raises(database.DatabaseError, match=r"cannot read: commands 'a': .*\(repair or delete that row\)"):
            store.claim("w")
        with pytest.raises(database.DatabaseError, match="commands 'a'"):
            store.history()
        with pytest.raises(database.DatabaseError, match="strategies 'rsi-infy': Invalid isoformat string"):
            store.strategies()
        ema = store.strategy("ema-nifty")  # the rest of the registry still reads
        assert ema is not None and ema.desired_state == "running"
        with store.db.transaction() as tx:
            tx.rows("UPDATE commands SET args = '{}' WHERE id = 'a'")
            tx.rows("UPDATE strategies SET updated_at = ? WHERE name = 'rsi-infy'", tx.time(datetime.now(UTC)))
        assert run_next(store) == "executed"
        assert {s.name for s in store.strategies()} >= {"ema-nifty", "rsi-infy"}
    finally:
        store.close()


def test_a_store_carries_on_when_postgresql_drops_its_connection(pg_cluster: postgres.Cluster) -> None:
    """A server restart or an idle timeout closes the store's connection between two calls: the next call
    opens a new one (a failed BEGIN did nothing), and a call cut off mid-transaction is DatabaseError, never
    the driver's own exception, so the daemons' handlers see it."""
    url = pg_cluster.create_database()
    name = url.partition("?")[0].rpartition("/")[2]
    store = Store.open(url, migrate=True)

    def drop_connections() -> None:
        with psycopg.connect(host=str(pg_cluster.directory), user=postgres.USER, dbname="postgres", autocommit=True) as c:
            c.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = %s", (name,))

    try:
        store.seed(declared(load_config(PAPER)), "deploy")
        drop_connections()
        assert "ema-nifty" in {s.name for s in store.strategies()}
        with pytest.raises(database.DatabaseError, match="terminat"), store.db.transaction() as tx:
            drop_connections()
            tx.rows("SELECT 1")
        assert store.submit("after", "ema-nifty", "pause", {}, "alice").status == "pending"
    finally:
        store.close()


# -- the queue ------------------------------------------------------------------------------------

def test_the_same_command_id_twice_is_one_command(store: Store) -> None:
    first = store.submit("op-1", "ema-nifty", "pause", {}, "alice")
    again = store.submit("op-1", "ema-nifty", "pause", {}, "alice")
    assert again == first
    assert [c.id for c in store.history()] == ["op-1"]
    assert [a.action for a in store.audit("ema-nifty") if a.command_id] == ["submitted"]
    with pytest.raises(IdReused, match="already pause ema-nifty"):
        store.submit("op-1", "ema-nifty", "resume", {}, "alice")
    assert [c.verb for c in store.history()] == ["pause"]


def test_concurrent_submits_of_one_id_make_one_command(store: Store) -> None:
    barrier, results = threading.Barrier(4), []

    def submit() -> None:
        barrier.wait()
        results.append(store.submit("race-1", "rsi-infy", "pause", {}, "bob"))

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and len({r.seq for r in results}) == 1
    assert len(store.history()) == 1


def test_create_adds_a_stopped_strategy_once_judged_as_fleet_toml_would(store: Store) -> None:
    spec = StrategySpec(name="ema-tcs", kind="ema_crossover", engine="equity", process="engine",
                        params={"symbol": "TCS", "quantity": 1, "fast": 5, "slow": 20}, desired_state="stopped",
                        auto_start=False)
    before = (store.strategies(), store.audit())
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({"kind": "nope"}, ["kind"]), ({"params": {**spec.params, "fast": 2**70}}, ["params.fast"]),
        ({"params": {**spec.params, "fast": 30}}, ["params"]), ({"name": "Bad"}, ["name"])]
    for bad, problems in cases:
        with pytest.raises(Invalid) as refused:
            store.create(replace(spec, **bad), "alice")
        assert [where for where, _ in refused.value.problems] == problems
    assert (store.strategies(), store.audit()) == before  # nothing written
    created = store.create(spec, "alice")
    assert (created.desired_state, created.version, created.params) == ("stopped", 1, spec.params)
    assert store.strategy("ema-tcs") == created
    with pytest.raises(Exists):
        store.create(spec, "bob")
    store.record("bob", "refused", "ema-tcs", None, {"reason": "exists"})
    assert [(a.actor, a.action) for a in store.audit("ema-tcs")] == [("alice", "created"), ("bob", "refused")]
    assert store.submit("start-tcs", "ema-tcs", "start", {}, "alice").status == "pending"


@pytest.mark.parametrize(("strategy", "verb", "args", "reason"), [
    ("nope", "pause", {}, "unknown strategy 'nope'"),
    ("ema-nifty", "explode", {}, "unknown verb"),
    ("ema-nifty", "pause", {"now": True}, "pause takes no arguments"),
    ("ema-nifty", "update_config", {}, "at least one parameter"),
    ("ema-nifty", "update_config", {"params": {"fast": 30}}, "need 0 < fast < slow"),  # the strategy's own check
    ("ema-nifty", "update_config", {"params": {"fast": float("nan")}}, "finite"),
    ("ema-nifty", "update_config", {"params": {"bogus": 1}}, "bogus"),
])
def test_a_bad_command_is_refused_and_nothing_is_written(store: Store, strategy: str, verb: str, args: dict[str, object],
                                                         reason: str) -> None:
    before = (store.strategies(), store.audit())
    with pytest.raises(Refused, match=reason):
        store.submit("bad-1", strategy, verb, args, "alice")
    assert store.history() == [] and (store.strategies(), store.audit()) == before


def test_concurrent_claims_take_every_command_exactly_once_in_each_strategy_s_order(store: Store) -> None:
    names = [f"s{i}" for i in range(12)]
    store.seed([spec(n) for n in names], "deploy", reset=True)
    for round_ in range(6):  # pause, resume, pause, ...: out of order, the table would refuse one
        for n in names:
            store.submit(f"{n}-{round_}", n, "resume" if round_ % 2 else "pause", {}, "alice")
    total, claimed, finished = 6 * len(names), list[str](), list[str]()
    lock = threading.Lock()
    deadline = time.monotonic() + 60  # a bug that loses a command ends the workers, and the asserts say so

    def work() -> None:
        me = threading.current_thread().name
        while len(finished) < total and time.monotonic() < deadline:
            c = store.claim(me)
            if c is None:  # every strategy's next command is in another worker's hands
                time.sleep(0.001)
                continue
            with lock:
                claimed.append(c.id)
            store.finish(c.id, "executed", None, me)
            with lock:
                finished.append(c.id)

    threads = [threading.Thread(target=work, name=f"w{i}") for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(claimed) == len(set(claimed)) == total
    assert {c.status for c in store.history(limit=1000)} == {"executed"}
    assert {s.desired_state for s in store.strategies() if s.name in names} == {"running"}
    assert {s.version for s in store.strategies() if s.name in names} == {7}


def test_two_operators_racing_pause_and_resume_end_consistent_with_a_complete_audit(store: Store) -> None:
    barrier, done = threading.Barrier(3), threading.Event()

    def operator(actor: str, verb: str) -> None:
        barrier.wait()
        for i in range(15):
            store.submit(f"{actor}-{i}", "ema-nifty", verb, {}, actor)

    def dispatcher() -> None:
        barrier.wait()
        while not done.is_set():
            if run_next(store) is None:
                time.sleep(0.001)

    threads = [threading.Thread(target=operator, args=("alice", "pause")),
               threading.Thread(target=operator, args=("bob", "resume")), threading.Thread(target=dispatcher)]
    for t in threads:
        t.start()
    threads[0].join()
    threads[1].join()
    done.set()
    threads[2].join(timeout=60)
    while run_next(store) is not None:  # what the dispatcher left when it stopped
        pass
    trail = [a for a in store.audit("ema-nifty", limit=1000) if a.command_id]
    outcomes = [a.command_id for a in trail if a.action != "submitted"]  # in the order they ran
    commands = sorted(store.history(limit=100), key=lambda c: outcomes.index(c.id))
    assert len(commands) == 30 and all(c.status != "pending" for c in commands)
    # Replayed in the order they ran, the table explains every outcome and the end state. (That order is the
    # queue's, except on PostgreSQL for two submits committing together: the later sequence number may commit,
    # and run, first.)
    state = "running"
    for c in commands:
        if (state, c.verb) in STRATEGY_TRANSITIONS:
            assert c.status == "executed", c
            state = STRATEGY_TRANSITIONS[state, c.verb]  # type: ignore[index]
        else:
            assert c.status == "failed" and c.reason and f"it is {state}" in c.reason, c
    ema = store.strategy("ema-nifty")
    assert ema is not None and ema.desired_state == state
    assert ema.version == 1 + sum(c.status == "executed" for c in commands)
    for c in commands:
        assert [(a.action, a.actor) for a in trail if a.command_id == c.id] == [("submitted", c.actor), (c.status, "worker")]


def test_a_strategy_s_next_command_waits_for_the_one_in_flight(store: Store) -> None:
    store.submit("a", "ema-nifty", "pause", {}, "alice")
    store.submit("b", "ema-nifty", "resume", {}, "alice")
    store.submit("c", "rsi-infy", "pause", {}, "alice")
    first = store.claim("w1")
    assert first is not None and first.id == "a"
    second = store.claim("w2")
    assert second is not None and second.id == "c"  # not b: a is still in flight
    assert store.claim("w3") is None
    store.finish("a", "executed", None, "w1")
    third = store.claim("w3")
    assert third is not None and third.id == "b"


def test_a_command_committed_late_waits_for_the_younger_one_in_flight(store: Store) -> None:
    store.submit("a", "ema-nifty", "pause", {}, "alice")
    store.submit("b", "ema-nifty", "update_config", {"params": {"fast": 5}}, "bob")
    with store.db.transaction() as tx:  # as on PostgreSQL when a's submit commits after b was claimed
        tx.rows("UPDATE commands SET claimed_by = 'w1', claimed_at = ? WHERE id = 'b'", tx.time(datetime.now(UTC)))
    assert store.claim("w2") is None
    store.finish("b", "executed", None, "w1")
    claimed = store.claim("w2")
    assert claimed is not None and claimed.id == "a"


def test_each_host_s_worker_claims_only_the_commands_of_its_engines_and_any_fails_an_unknown_strategy(
        store: Store) -> None:
    """Hosts sharing one queue: the strategy host's commander (fno, equity) and another host's (options)."""
    store.submit("a", "ema-nifty", "pause", {}, "alice")  # fno
    store.submit("b", "rsi-infy", "pause", {}, "alice")  # equity
    options = {s.name for s in store.strategies() if s.engine == "options"}
    assert options, "paper.toml has an options strategy"
    store.submit("c", sorted(options)[0], "pause", {}, "alice")
    assert store.claim("options-host", engines={"options"}) is not None
    assert store.claim("options-host", engines={"options"}) is None  # a and b are not its host's
    mine = [store.claim("strat-host", engines={"fno", "equity"}) for _ in range(2)]
    assert sorted(c.id for c in mine if c is not None) == ["a", "b"]
    with store.db.transaction() as tx:  # a command whose strategy is gone: any worker takes it, and fails it
        tx.rows("UPDATE commands SET strategy = 'gone', claimed_at = NULL WHERE id = 'c'")
    store.submit("d", "ema-nifty", "resume", {}, "alice")
    store.finish("a", "executed", None, "strat-host")
    assert store.claim("options-host", engines={"options"}) is None
    gone = store.command("c")
    assert gone is not None and gone.status == "failed" and "unknown strategy 'gone'" in (gone.reason or ""), gone


def test_a_dead_worker_s_lease_is_taken_over(store: Store) -> None:
    store.submit("a", "ema-nifty", "pause", {}, "alice")
    assert store.claim("dies") is not None
    assert store.claim("other", lease_sec=60) is None
    taken = store.claim("other", lease_sec=0)
    assert taken is not None and (taken.id, taken.claimed_by) == ("a", "other")


def test_an_outcome_is_written_once(store: Store) -> None:
    store.submit("a", "ema-nifty", "update_config", {"params": {"fast": 5}}, "alice")
    assert run_next(store) == "executed"
    again = store.finish("a", "executed", None, "late-worker")  # a re-sent result changes nothing
    assert again.status == "executed" and again.claimed_by == "worker"
    with pytest.raises(Refused, match="already executed"):
        store.finish("a", "failed", "too late", "late-worker")
    ema = store.strategy("ema-nifty")
    assert ema is not None and (ema.version, ema.params["fast"]) == (2, 5)
    assert [a.action for a in store.audit("ema-nifty") if a.command_id] == ["submitted", "executed"]


def test_a_failed_command_changes_nothing_but_records_the_reason(store: Store) -> None:
    store.submit("a", "ema-nifty", "pause", {}, "alice")
    claimed = store.claim("worker")
    assert claimed is not None
    failed = store.finish("a", "failed", "engine algo-fno is not running", "worker")
    assert (failed.status, failed.reason) == ("failed", "engine algo-fno is not running")
    ema = store.strategy("ema-nifty")
    assert ema is not None and (ema.desired_state, ema.version) == ("running", 1)


def test_every_verb_from_every_state_follows_the_table(store: Store) -> None:
    cases = [(state, verb) for state in STATES for verb in VERBS]
    names = {case: f"t{i}" for i, case in enumerate(cases)}
    store.seed([spec(names[case]) for case in cases], "deploy", reset=True)
    with store.db.transaction() as tx:
        for (state, _), name in names.items():
            tx.rows("UPDATE strategies SET desired_state = ? WHERE name = ?", state, name)
    for (_, verb), name in names.items():
        store.submit(name, name, verb, {"params": {"fast": 5}} if verb == "update_config" else {}, "alice")
    while run_next(store) is not None:
        pass
    for (state, verb), name in names.items():
        command, strategy = store.command(name), store.strategy(name)
        assert command is not None and strategy is not None
        if (state, verb) in STRATEGY_TRANSITIONS:
            assert (command.status, strategy.desired_state) == ("executed", STRATEGY_TRANSITIONS[state, verb]), name
        else:
            assert command.status == "failed" and f"it is {state}" in (command.reason or ""), (state, verb)
            assert strategy.desired_state == state


def test_a_command_whose_strategy_was_removed_fails_with_the_reason(store: Store) -> None:
    store.submit("a", "straddle-nifty", "pause", {}, "alice")
    config = declared(load_config(PAPER))
    store.seed([s for s in config if s.name != "straddle-nifty"], "deploy", reset=True)
    assert store.claim("worker") is None
    command = store.command("a")
    assert command is not None and (command.status, command.reason) == ("failed", "unknown strategy 'straddle-nifty'")


def test_commands_and_state_survive_reopening(url: str) -> None:
    store = Store.open(url, migrate=True)
    store.seed(declared(load_config(PAPER)), "deploy")
    store.submit("a", "rsi-infy", "pause", {}, "alice")
    assert run_next(store) == "executed"
    store.submit("b", "rsi-infy", "resume", {}, "alice")
    store.close()
    reopened = Store.open(url)
    try:
        rsi = reopened.strategy("rsi-infy")
        assert rsi is not None and (rsi.desired_state, rsi.version) == ("paused", 2)
        assert [(c.id, c.status) for c in reopened.history()] == [("b", "pending"), ("a", "executed")]
        assert run_next(reopened) == "executed"
    finally:
        reopened.close()


# -- seeding and drift ----------------------------------------------------------------------------

def test_seeding_adopts_run_time_changes_unless_reset(store: Store) -> None:
    toml = declared(load_config(PAPER))
    store.submit("a", "ema-nifty", "update_config", {"params": {"fast": 5}}, "alice")
    store.submit("b", "rsi-infy", "pause", {}, "alice")
    while run_next(store):
        pass
    edited = [replace(s, auto_start=False) if s.name == "rsi-reliance" else s for s in toml]  # fleet.toml changed
    report = store.seed(edited, "deploy")
    assert report.added == [] and report.removed == []
    assert [str(d) for d in report.applied] == ['rsi-reliance: auto_start: fleet.toml false, database true']
    assert [str(d) for d in report.kept] == ['ema-nifty: params.fast: fleet.toml 9, database 5',
                                             'rsi-infy: desired_state: fleet.toml "running", database "paused"']
    ema = store.strategy("ema-nifty")
    assert ema is not None and ema.params["fast"] == 5
    assert {a.action for a in store.audit() if a.actor == "deploy"} >= {"seeded", "adopted"}

    report = store.seed(edited[1:], "deploy", reset=True)
    assert report.removed == [edited[0].name]
    assert compare(edited[1:], store.strategies()) == []
    assert "removed" in {a.action for a in store.audit()} and "reset" in {a.action for a in store.audit()}


def test_an_edit_of_fleet_toml_is_taken_and_a_run_time_change_kept(store: Store) -> None:
    toml = declared(load_config(PAPER))
    store.submit("a", "ema-nifty", "update_config", {"params": {"fast": 5}}, "alice")
    assert run_next(store) == "executed"
    edit = [replace(s, params={**s.params, "slow": 30}) if s.name == "ema-nifty" else s for s in toml]
    report = store.seed(edit, "deploy")
    assert [str(d) for d in report.applied] == ["ema-nifty: params.slow: fleet.toml 30, database 21"]
    assert [str(d) for d in report.kept] == ["ema-nifty: params.fast: fleet.toml 9, database 5"]
    edit = [replace(s, params={**s.params, "fast": 7}) if s.name == "ema-nifty" else s for s in edit]
    report = store.seed(edit, "deploy")  # fleet.toml now says something new about fast too: it wins
    assert [str(d) for d in report.applied] == ["ema-nifty: params.fast: fleet.toml 7, database 5"] and report.kept == []
    ema = store.strategy("ema-nifty")
    assert ema is not None and (ema.params["fast"], ema.params["slow"]) == (7, 30)
    assert store.seed(edit, "deploy") == SeedReport()  # nothing left to do: a second deploy changes nothing


def test_diff_lists_every_difference_in_a_stable_order() -> None:
    toml = [spec("b"), spec("c", fast=9), spec("only-toml")]
    db = [spec("b", state="paused"), spec("c", fast=5, allow_short=False), spec("a-only-db")]
    assert render(compare(toml, db), len(db)) == "\n".join([
        'a-only-db: strategy: fleet.toml (absent), database "present"',
        'b: auto_start: fleet.toml true, database false',
        'b: desired_state: fleet.toml "running", database "paused"',
        'c: params.allow_short: fleet.toml (absent), database false',
        'c: params.fast: fleet.toml 9, database 5',
        'only-toml: strategy: fleet.toml "declared", database (absent)',
        "6 difference(s) between fleet.toml and the database",
    ])
    assert render([], 3) == "no drift: the database's 3 strategies match fleet.toml"


# -- the config and algoctl -----------------------------------------------------------------------

@pytest.mark.parametrize("value", ["sqlite:///relative.db", "sqlite://", "mysql://x@h/db", "postgresql://u@h/db",
                                   "postgresql+psycopg://u:secret@h/db", "postgresql+psycopg://u@h/"])
def test_a_database_url_the_store_cannot_use_is_a_config_error(tmp_path: Path, value: str) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text(f'[control_plane]\ndatabase_url = "{value}"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(config)
    assert [p.path for p in exc.value.problems] == ["control_plane.database_url"]
    assert "secret" not in str(exc.value)  # a password is never repeated in an error


def test_the_default_database_is_sqlite_in_the_state_directory() -> None:
    assert load_config(PAPER).control_plane.database_url == "sqlite:////var/lib/algo/control/control.db"


def run_algoctl(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        algoctl(list(args))
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


@pytest.fixture
def fleet_toml(url: str, tmp_path: Path) -> Path:
    config = tmp_path / "fleet.toml"
    config.write_text(PAPER.read_text().replace("sqlite:////var/lib/algo/control/control.db", url))
    return config


def test_algoctl_seeds_diffs_and_queues_commands(fleet_toml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = ("--config", str(fleet_toml))
    code, _, err = run_algoctl(capsys, "strategy", *cfg, "list")
    assert code == 69 and "algoctl config seed" in err  # not migrated yet
    code, out, _ = run_algoctl(capsys, "config", "seed", *cfg)
    assert code == 0 and "added ema-nifty" in out
    assert run_algoctl(capsys, "config", "diff", *cfg)[:2] == (0, "no drift: the database's 4 strategies match fleet.toml\n")

    code, out, _ = run_algoctl(capsys, "strategy", *cfg, "set", "ema-nifty", "fast=5", 'underlying="NIFTY"', "--id", "op-1")
    assert code == 0 and "op-1  update_config ema-nifty" in out and out.rstrip().endswith(": pending")
    assert run_algoctl(capsys, "strategy", *cfg, "set", "ema-nifty", "fast=5", 'underlying="NIFTY"', "--id", "op-1")[0] == 0
    code, out, _ = run_algoctl(capsys, "strategy", *cfg, "pause", "ema-nifty", "--wait", "0.3")
    assert code == 75 and ": pending" in out

    store = Store.open(load_config(fleet_toml).control_plane.database_url)
    try:
        history = store.history()
        assert [(c.verb, c.args) for c in history] == [("pause", {}),
                                                       ("update_config", {"params": {"fast": 5, "underlying": "NIFTY"}})]
        assert {c.actor for c in history} == {getpass.getuser()}
        while run_next(store):
            pass
    finally:
        store.close()
    code, out, _ = run_algoctl(capsys, "config", "diff", *cfg)
    assert code == 1 and out.splitlines() == ['ema-nifty: desired_state: fleet.toml "running", database "paused"',
                                              "ema-nifty: params.fast: fleet.toml 9, database 5",
                                              "2 difference(s) between fleet.toml and the database"]
    code, out, _ = run_algoctl(capsys, "strategy", *cfg, "list")
    assert code == 0 and any(line.split()[:6] == ["ema-nifty", "fno", "engine", "paused", "yes", "3"]
                             for line in out.splitlines())
    code, out, _ = run_algoctl(capsys, "strategy", *cfg, "history", "ema-nifty")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2 and " pause ema-nifty  by " in lines[0] and lines[0].endswith(": executed")
    assert '  op-1  update_config ema-nifty {"fast":5,"underlying":"NIFTY"}  by ' in lines[1]
    code, out, err = run_algoctl(capsys, "strategy", *cfg, "resume", "ema-nifty", "--id", "op-1")
    assert code == 2 and "command id 'op-1' is already update_config ema-nifty" in err


def test_algoctl_says_when_the_database_cannot_be_reached(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text(f'[control_plane]\ndatabase_url = "postgresql+psycopg://postgres@/fleet?host={tmp_path}/no-server"\n')
    code, out, err = run_algoctl(capsys, "strategy", "--config", str(config), "list")
    assert (code, out) == (69, "") and err.startswith("algoctl strategy list: the control-plane database: ")
    assert len(err.splitlines()) == 1, err


@pytest.mark.parametrize(("argv", "message"), [
    (["set", "ema-nifty", "fast"], "'fast' is not key=value"),
    (["set", "ema-nifty", "fast=30"], "need 0 < fast < slow"),
    (["set", "ema-nifty", "fast=nan"], "finite"),
    (["set", "ema-nifty", "fast=1", "fast=2"], "fast is given twice"),
    (["set", "ema-nifty", "symbol=[1"], "neither a TOML value nor a bare word"),
    (["pause", "nope"], "unknown strategy 'nope'"),
    (["pause", "ema-nifty", "--id", "has space"], "command id"),
    (["history", "--limit", "0"], "--limit"),
    (["explode", "ema-nifty"], "invalid choice"),
    (["pause"], "required"),
])
def test_algoctl_strategy_refuses_bad_arguments_and_changes_nothing(fleet_toml: Path, capsys: pytest.CaptureFixture[str],
                                                                    argv: list[str], message: str) -> None:
    assert run_algoctl(capsys, "config", "seed", "--config", str(fleet_toml))[0] == 0
    store = Store.open(load_config(fleet_toml).control_plane.database_url)
    try:
        before = (store.strategies(), store.audit())
        code, _, err = run_algoctl(capsys, "strategy", "--config", str(fleet_toml), *argv)
        assert code == 2 and message in err, err
        assert store.history() == [] and (store.strategies(), store.audit()) == before
    finally:
        store.close()

