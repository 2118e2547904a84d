"""Opening the database by URL, and migrating it: the only places that know SQLite from PostgreSQL.

The daemons that use the database (algo-commander, the gateway) speak to it through the drivers
themselves, the stdlib's sqlite3 and psycopg 3: SQLAlchemy's core and ORM would cost each ~17 MB of RSS
(bench/pipeline/README.md) for a dozen statements. SQLAlchemy and Alembic are loaded only by what
migrates: `algoctl config seed`, which the deploy runs.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 5000  # a writer waits this long for another's transaction before "database is locked"
SQLITE_PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}", "foreign_keys=ON")
# How SQLAlchemy's SQLite dialect writes a DATETIME (the migrations' tables hold such text): fixed width,
# so the queue's lease comparisons work on the text; UTC, as SQLite keeps no zone.
SQLITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"

# The newest migration this code ships. The daemons that only use the database check it without
# importing Alembic; tests/test_control_plane.py holds it to the migrations' own head.
HEAD = "0002"
VERSION_TABLE = "alembic_version"  # where Alembic keeps a database's revision

Dialect = Literal["sqlite", "postgresql"]

if TYPE_CHECKING:
    from sqlalchemy import Engine


class SchemaError(RuntimeError):
    """The database's schema is not the one this code was written for."""


class DatabaseError(RuntimeError):
    """The database failed or cannot be reached; the message is the driver's first line."""


@dataclass(frozen=True)
class Location:
    """Where a database URL points: SQLite's file, or a libpq URI for psycopg."""

    dialect: Dialect
    target: str

    @classmethod
    def of(cls, url: str) -> Location:
        """``sqlite:////abs/path.db`` or ``postgresql+psycopg://user@host/db?host=...``, the URLs fleet.toml's
        ``[control_plane] database_url`` accepts (SQLAlchemy's spelling of them)."""
        scheme, sep, rest = url.partition("://")
        if scheme == "sqlite" and sep and len(rest) > 1 and rest.startswith("/"):
            return cls("sqlite", rest[1:])
        if scheme in ("postgresql", "postgresql+psycopg") and sep:
            return cls("postgresql", f"postgresql://{rest}")
        raise ValueError(f"the control plane runs on SQLite (a file) or PostgreSQL, not {url!r}")

    def make_folder(self) -> None:
        """SQLite's file's folder, created: a fresh host's state directory holds no database yet."""
        if self.dialect == "sqlite":
            Path(self.target).parent.mkdir(parents=True, exist_ok=True)


class Transaction:
    """One transaction's statements, written once for both dialects: ``?`` placeholders, ``FOR UPDATE`` where
    PostgreSQL needs a row lock (SQLite's IMMEDIATE transaction holds the whole database's write lock)."""

    def __init__(self, dialect: Dialect, cursor: Any) -> None:
        self.dialect = dialect
        self._cursor = cursor
        self.for_update = " FOR UPDATE" if dialect == "postgresql" else ""

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        self._cursor.execute(sql.replace("?", "%s") if self.dialect == "postgresql" else sql, params)
        return list(self._cursor.fetchall()) if self._cursor.description is not None else []

    def one(self, sql: str, *params: Any) -> tuple[Any, ...] | None:
        found = self.rows(sql, *params)
        return found[0] if found else None

    # -- values in and out: SQLite keeps JSON and times as text, PostgreSQL as json and timestamptz --------

    def json(self, value: Any) -> Any:
        if self.dialect == "sqlite":
            return json.dumps(value)
        from psycopg.types.json import Json

        return Json(value)

    def time(self, value: datetime | None) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware UTC time")
        return value.astimezone(UTC).strftime(SQLITE_TIME_FORMAT) if self.dialect == "sqlite" else value.astimezone(UTC)


def placeholders(values: Sequence[Any]) -> str:
    """``?, ?, ?`` for an IN list of these values."""
    return ", ".join("?" for _ in values)


def loads_json(value: Any) -> Any:
    """A JSON column as read: text from SQLite, already parsed by psycopg."""
    return json.loads(value) if isinstance(value, str) else value


def loads_time(value: Any) -> datetime | None:
    """A time column as read, aware and in UTC (SQLite's text has no zone: it was written in UTC)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Database:
    """One connection, opened on first use and again after the driver failed, shared by the threads of one
    process one transaction at a time (algo-commander and the gateway run store calls in worker threads)."""

    def __init__(self, url: str) -> None:
        self.location = Location.of(url)
        self.dialect = self.location.dialect
        self._connection: Any = None
        self._lock = threading.Lock()

    def _connect(self) -> Any:
        if self.dialect == "sqlite":
            import sqlite3

            self.location.make_folder()
            # isolation_level=None: the driver's own BEGIN would be deferred; ours takes the write lock up front
            connection = sqlite3.connect(self.location.target, isolation_level=None, check_same_thread=False,
                                         timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
            for pragma in SQLITE_PRAGMAS:
                connection.execute(f"PRAGMA {pragma}")
            return connection
        import psycopg

        return psycopg.connect(self.location.target, autocommit=True)  # transactions are our BEGIN / COMMIT

    def _errors(self) -> tuple[type[Exception], ...]:
        if self.dialect == "sqlite":
            import sqlite3

            return (sqlite3.Error,)
        import psycopg

        return (psycopg.Error,)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A transaction: committed if the block returns, rolled back if it raises. SQLite's begins IMMEDIATE
        (a deferred one that reads and then writes fails at once when another writer got there first,
        busy_timeout or not); PostgreSQL's runs at READ COMMITTED and locks the rows it will change.
        A driver's error is DatabaseError, and the connection is opened anew for the next transaction."""
        errors = self._errors()
        with self._lock:
            try:
                cursor = self._begin()
            except errors as exc:
                raise DatabaseError(first_line(exc)) from exc
            try:
                yield Transaction(self.dialect, cursor)
                cursor.execute("COMMIT")
            except errors as exc:
                self._discard()
                raise DatabaseError(first_line(exc)) from exc
            except BaseException:
                try:
                    cursor.execute("ROLLBACK")
                except errors:
                    self._discard()
                raise

    def _begin(self) -> Any:
        """BEGIN on the open connection. On PostgreSQL, once more on a new connection if that failed (the server
        restarted, or closed an idle connection, since the last transaction): a failed BEGIN did nothing, so
        trying again is safe. SQLite's BEGIN fails only on the file itself (locked past busy_timeout, unreadable),
        which a new connection would not mend."""
        begin = "BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN"
        if self._connection is not None and self.dialect == "postgresql":
            try:
                cursor = self._connection.cursor()
                cursor.execute(begin)
                return cursor
            except self._errors():
                self._discard()
        if self._connection is None:
            self._connection = self._connect()
        cursor = self._connection.cursor()
        cursor.execute(begin)
        return cursor

    def _discard(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except self._errors():
                pass

    def close(self) -> None:
        with self._lock:
            self._discard()


def first_line(exc: BaseException) -> str:
    """An exception's message as one line for a log or an HTTP answer (a driver's can run to many)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def current(db: Database) -> str | None:
    """The database's revision, as Alembic recorded it (None: never migrated, or migrated down to nothing)."""
    exists = ("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?" if db.dialect == "sqlite"
              else "SELECT to_regclass(?)")
    with db.transaction() as tx:
        found = tx.one(exists, VERSION_TABLE)
        if found is None or found[0] is None:
            return None
        version = tx.one(f"SELECT version_num FROM {VERSION_TABLE}")
        return None if version is None else str(version[0])


def require_head(db: Database) -> None:
    """Refuse a database the deploy has not migrated (or one a newer version migrated past this code)."""
    found = current(db)
    if found != HEAD:
        raise SchemaError(f"the control-plane database is at schema revision {found or 'none'}, this code needs {HEAD}: "
                          "run `algoctl config seed` (it migrates) as the deploy does")


# -- migrating: Alembic on a SQLAlchemy engine, only in the process that migrates --------------------------

def migration_engine(url: str) -> Engine:
    """A SQLAlchemy engine for Alembic (SQLite's directory created, as the daemons' own connection does)."""
    from sqlalchemy import create_engine

    Location.of(url).make_folder()
    return create_engine(url)


def _run_alembic(url: str, step: Literal["upgrade", "downgrade"], revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    engine = migration_engine(url)
    try:
        with engine.begin() as connection:  # one transaction: PostgreSQL's and SQLite's DDL are transactional
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            getattr(command, step)(config, revision)
    except Exception as exc:
        from sqlalchemy.exc import SQLAlchemyError

        if isinstance(exc, SQLAlchemyError):
            raise DatabaseError(first_line(exc)) from exc
        raise
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate up to ``revision``, in one transaction."""
    _run_alembic(url, "upgrade", revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate down to ``revision`` (``base``: no tables left)."""
    _run_alembic(url, "downgrade", revision)
