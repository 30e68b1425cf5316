"""Alembic's environment: runs on the connection the service (or `python -m app.records`) hands it."""

from __future__ import annotations

from alembic import context

from app.records.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through app.records.database.prepare_schema")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
