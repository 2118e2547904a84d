"""The strategy registry, the command queue and the audit trail.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UtcTime = sa.DateTime(timezone=True)  # SQLite: UTC text without a zone
STATES = "'running', 'paused', 'stopped'"
VERBS = "'start', 'stop', 'restart', 'pause', 'resume', 'update_config'"
STATUSES = "'pending', 'executed', 'failed'"


def upgrade() -> None:
    op.create_table(
        "strategies",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("engine", sa.String(32), nullable=False),
        sa.Column("process", sa.String(8), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("desired_state", sa.String(16), nullable=False),
        sa.Column("auto_start", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", UtcTime, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_strategies"),
        sa.CheckConstraint(f"desired_state IN ({STATES})", name="ck_strategies_desired_state"),
        sa.CheckConstraint("process IN ('engine', 'own')", name="ck_strategies_process"),
        sa.CheckConstraint("version >= 1", name="ck_strategies_version"),
    )
    op.create_table(
        "commands",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("strategy", sa.String(32), nullable=False),
        sa.Column("verb", sa.String(16), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", UtcTime, nullable=False),
        sa.Column("claimed_by", sa.String(128), nullable=True),
        sa.Column("claimed_at", UtcTime, nullable=True),
        sa.Column("finished_at", UtcTime, nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_commands"),
        sa.UniqueConstraint("id", name="uq_commands_id"),
        sa.CheckConstraint(f"verb IN ({VERBS})", name="ck_commands_verb"),
        sa.CheckConstraint(f"status IN ({STATUSES})", name="ck_commands_status"),
    )
    op.create_index("ix_commands_status_seq", "commands", ["status", "seq"])
    op.create_index("ix_commands_strategy_seq", "commands", ["strategy", "seq"])
    op.create_table(
        "audit",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("at", UtcTime, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("strategy", sa.String(32), nullable=True),
        sa.Column("command_id", sa.String(64), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit"),
    )


def downgrade() -> None:
    op.drop_table("audit")
    op.drop_index("ix_commands_strategy_seq", table_name="commands")
    op.drop_index("ix_commands_status_seq", table_name="commands")
    op.drop_table("commands")
    op.drop_table("strategies")
