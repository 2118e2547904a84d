"""The tables, declared once for Alembic (``migrations/env.py``: what ``alembic revision --autogenerate``
compares against) and for the test that holds the migrations to them. The store's SQL names these
columns; changing one means a new migration in ``migrations/versions/``. Imported only where the
database is migrated, never by the daemons (SQLAlchemy is ~12 MB of RSS).
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Boolean, CheckConstraint, Column, DateTime, Index, Integer, MetaData, String, Table, Text

from .transitions import STATES, STATUSES, VERBS

# SQLite's INTEGER PRIMARY KEY is its rowid (autoincrementing); PostgreSQL gets 64 bits.
SeqType = BigInteger().with_variant(Integer, "sqlite")
UtcTime = DateTime(timezone=True)  # SQLite keeps it as UTC text without a zone (database.SQLITE_TIME_FORMAT)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s", "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s", "pk": "pk_%(table_name)s",
})

# A strategy of the fleet: seeded from fleet.toml, changed at run time only by executed commands.
strategies = Table(
    "strategies", metadata,
    Column("name", String(32), primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("engine", String(32), nullable=False),  # the engine section it belongs to: fno, equity, options
    Column("process", String(8), nullable=False),  # "engine": hosted by it; "own": algo-strategy@NAME
    Column("params", JSON, nullable=False),
    Column("desired_state", String(16), nullable=False),
    Column("auto_start", Boolean, nullable=False),
    Column("version", Integer, nullable=False),  # +1 on every change
    Column("updated_at", UtcTime, nullable=False),
    # fleet.toml's desired_state and params at the last seed (null before): what an edit of fleet.toml is
    Column("declared", JSON, nullable=True),
    CheckConstraint(_one_of("desired_state", STATES), name="desired_state"),
    CheckConstraint(_one_of("process", ("engine", "own")), name="process"),
    CheckConstraint("version >= 1", name="version"),
)

# One operator command. ``id`` is the client's idempotency key; ``seq`` is the queue's order.
commands = Table(
    "commands", metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("strategy", String(32), nullable=False),  # no foreign key: a command may outlive its strategy
    Column("verb", String(16), nullable=False),
    Column("args", JSON, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=True),
    Column("created_at", UtcTime, nullable=False),
    Column("claimed_by", String(128), nullable=True),  # a lease: who is carrying it out, since when
    Column("claimed_at", UtcTime, nullable=True),
    Column("finished_at", UtcTime, nullable=True),
    CheckConstraint(_one_of("verb", VERBS), name="verb"),
    CheckConstraint(_one_of("status", STATUSES), name="status"),
    Index("ix_commands_status_seq", "status", "seq"),
    Index("ix_commands_strategy_seq", "strategy", "seq"),
)

# Append-only: every submit, outcome and seeding change, with who did it.
audit = Table(
    "audit", metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("at", UtcTime, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(32), nullable=False),  # submitted, executed, failed, seeded, adopted, reset, removed
    Column("strategy", String(32), nullable=True),
    Column("command_id", String(64), nullable=True),
    Column("detail", JSON, nullable=False),
)
