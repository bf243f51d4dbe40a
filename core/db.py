"""Async database engine and sessions: SQLite in WAL mode by default, PostgreSQL (asyncpg) in production.

See STACK_FACTS: ``expire_on_commit=False`` avoids MissingGreenlet on attribute access after commit, and WAL plus a
busy timeout lets several processes share one SQLite file. The pragmas are SQLite's only; on PostgreSQL the pool
pings a connection before handing it out, so a restarted server costs no failed request.
"""

from __future__ import annotations

import asyncio
import fcntl
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

MIGRATION_LOCK_KEY = 0x4D494752
"""ASCII "MIGR": the PostgreSQL advisory lock key that serializes schema setup (Alembic and the checkpoint tables)."""


def is_sqlite_url(url: str) -> bool:
    """Whether ``url`` is a SQLite one (the embedded default); anything else is taken for PostgreSQL."""
    return url.startswith("sqlite")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class Database:
    """One engine per process and a session factory.

    Args:
        url: an async SQLAlchemy URL, e.g. ``sqlite+aiosqlite:///data/orchestrator.db`` or
            ``postgresql+asyncpg://...``.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        is_sqlite = is_sqlite_url(url)
        if is_sqlite:
            self.engine: AsyncEngine = create_async_engine(url, connect_args={"timeout": 30})
        else:
            self.engine = create_async_engine(url, pool_pre_ping=True)
        self.lease_lock = asyncio.Lock()
        """Serializes port leasing within this process; across processes the unique keys decide."""
        if is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)

    async def migrate(self) -> None:
        """Bring the schema to the latest Alembic revision (idempotent).

        Concurrent starters are serialized: on SQLite by a file lock beside the database file, on PostgreSQL by a
        transaction-level advisory lock taken in the migration's own transaction (PostgreSQL's DDL is
        transactional, so a second starter waits, then finds the schema at head and does nothing).
        """
        async with self._migration_lock():
            async with self.engine.begin() as conn:
                if not is_sqlite_url(self.url):
                    await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                await conn.run_sync(lambda sync_conn: command.upgrade(alembic_config(sync_conn), "head"))

    @asynccontextmanager
    async def _migration_lock(self) -> AsyncIterator[None]:
        path = self.engine.url.database if is_sqlite_url(self.url) else None
        if not path or path == ":memory:":
            yield
            return
        with open(f"{path}.migrate.lock", "w") as lock:
            await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
            yield

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """Yield a session that commits on success and rolls back on error."""
        async with AsyncSession(self.engine, expire_on_commit=False) as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


MIGRATIONS = Path(__file__).resolve().parent.parent / "models" / "migrations"


def alembic_config(connection: Any) -> Config:
    """An Alembic config running on ``connection`` (see models/migrations/env.py)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


async def new_revision(message: str) -> None:
    """Autogenerate a migration from the models' difference to the latest revision (``make migration MSG=...``)."""
    import models  # noqa: F401  (registers every table on SQLModel.metadata)

    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite+aiosqlite:///{tmp}/schema.db")
        await db.migrate()
        async with db.engine.begin() as conn:
            await conn.run_sync(lambda c: command.revision(alembic_config(c), message=message, autogenerate=True))
        await db.dispose()
