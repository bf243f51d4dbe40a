"""Alembic environment: migrations run on the connection ``core.db.Database.migrate`` hands over.

Recipe: https://alembic.sqlalchemy.org/en/latest/cookbook.html#sharing-a-connection-across-one-or-more-programmatic-migration-commands
(the async engine's ``run_sync`` gives a sync connection). ``render_as_batch`` lets SQLite alter tables.
"""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import models  # noqa: F401  (registers every table on SQLModel.metadata)

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through core.db.Database.migrate() (it passes the connection)")
context.configure(connection=connection, target_metadata=SQLModel.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
