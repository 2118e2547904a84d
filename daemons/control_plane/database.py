"""Opening the database by URL, and migrating it: the only places that know SQLite from PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 5000  # a writer waits this long for another's transaction before "database is locked"


class SchemaError(RuntimeError):
    """The database's schema is not the one this code was written for."""


def connect(url: str) -> Engine:
    """An engine for ``url``: SQLite in WAL mode (its directory created), or PostgreSQL through psycopg 3.

    SQLite's transactions begin IMMEDIATE, taking the write lock up front: a deferred transaction that
    reads and then writes fails at once with "database is locked" when another writer got there first,
    busy_timeout or not. PostgreSQL's run at READ COMMITTED; the claim locks its row itself.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver's own BEGIN would be deferred: we send ours
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
                       "foreign_keys=ON"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


if TYPE_CHECKING:
    from alembic.config import Config

# The newest migration this code ships. The daemons that only use the database (algo-commander, the
# gateway) check it without importing Alembic, which with Mako costs a process ~25 MB of RSS;
# tests/test_control_plane.py holds it to the migrations' own head.
HEAD = "0002"
VERSION_TABLE = "alembic_version"  # where Alembic keeps a database's revision


def _alembic(connection: Connection) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate up to ``revision``, in one transaction (PostgreSQL's and SQLite's DDL are transactional)."""
    from alembic import command

    with engine.begin() as connection:
        command.upgrade(_alembic(connection), revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate down to ``revision`` (``base``: no tables left)."""
    from alembic import command

    with engine.begin() as connection:
        command.downgrade(_alembic(connection), revision)


def head() -> str:
    """The newest revision this code ships."""
    return HEAD


def current(engine: Engine) -> str | None:
    """The database's revision, as Alembic recorded it (None: never migrated, or migrated down to nothing)."""
    with engine.connect() as connection:
        if not inspect(connection).has_table(VERSION_TABLE):
            return None
        return connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def require_head(engine: Engine) -> None:
    """Refuse a database the deploy has not migrated (or one a newer version migrated past this code)."""
    found, want = current(engine), head()
    if found != want:
        raise SchemaError(f"the control-plane database is at schema revision {found or 'none'}, this code needs {want}: "
                          "run `algoctl config seed` (it migrates) as the deploy does")
