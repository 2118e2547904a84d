"""The tables, as SQLAlchemy 2 models. Changing one means a new migration in ``migrations/versions/``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, DateTime, Index, Integer, MetaData, String, Text, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .transitions import STATES, STATUSES, VERBS

# SQLite's INTEGER PRIMARY KEY is its rowid (autoincrementing); PostgreSQL gets 64 bits.
SeqType = BigInteger().with_variant(Integer, "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out: SQLite keeps no zone, and a naive time read back is ambiguous."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware UTC time")
        return None if value is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s", "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s", "pk": "pk_%(table_name)s",
    })


class Strategy(Base):
    """A strategy of the fleet: seeded from fleet.toml, changed at run time only by executed commands."""

    __tablename__ = "strategies"
    __table_args__ = (
        CheckConstraint(_one_of("desired_state", STATES), name="desired_state"),
        CheckConstraint(_one_of("process", ("engine", "own")), name="process"),
        CheckConstraint("version >= 1", name="version"),
    )

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    engine: Mapped[str] = mapped_column(String(32))  # the engine section it belongs to: fno, equity, options
    process: Mapped[str] = mapped_column(String(8))  # "engine": hosted by it; "own": algo-strategy@NAME
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    desired_state: Mapped[str] = mapped_column(String(16))
    auto_start: Mapped[bool]
    version: Mapped[int] = mapped_column(Integer)  # +1 on every change
    # fleet.toml's desired_state and params at the last seed (null before): what an edit of fleet.toml is
    declared: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Command(Base):
    """One operator command. ``id`` is the client's idempotency key; ``seq`` is the queue's order."""

    __tablename__ = "commands"
    __table_args__ = (
        CheckConstraint(_one_of("verb", VERBS), name="verb"),
        CheckConstraint(_one_of("status", STATUSES), name="status"),
        Index("ix_commands_status_seq", "status", "seq"),
        Index("ix_commands_strategy_seq", "strategy", "seq"),
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    strategy: Mapped[str] = mapped_column(String(32))  # no foreign key: a command may outlive its strategy
    verb: Mapped[str] = mapped_column(String(16))
    args: Mapped[dict[str, Any]] = mapped_column(JSON)
    actor: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    claimed_by: Mapped[str | None] = mapped_column(String(128))  # a lease: who is carrying it out, since when
    claimed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class Audit(Base):
    """Append-only: every submit, outcome and seeding change, with who did it."""

    __tablename__ = "audit"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))  # submitted, executed, failed, seeded, adopted, reset, removed
    strategy: Mapped[str | None] = mapped_column(String(32))
    command_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
