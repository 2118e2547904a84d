"""Alembic's entry point: run by ``database.migrate`` on a connection it opened (never from an ini file)."""

from __future__ import annotations

from alembic import context

from daemons.control_plane.models import Base

connection = context.config.attributes["connection"]
# SQLite alters a table by copying it (batch mode); PostgreSQL alters in place.
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
