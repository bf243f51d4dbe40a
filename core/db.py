"""Async database engine and sessions (SQLite in WAL mode by default, any SQLAlchemy async URL).

See STACK_FACTS: ``expire_on_commit=False`` avoids MissingGreenlet on attribute access after commit, and WAL plus a
busy timeout lets several processes share one SQLite file.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession


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
        is_sqlite = url.startswith("sqlite")
        connect_args = {"timeout": 30} if is_sqlite else {}
        self.engine: AsyncEngine = create_async_engine(url, connect_args=connect_args)
        self.lease_lock = asyncio.Lock()
        """Serializes port leasing within this process; across processes the unique keys decide."""
        if is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)

    async def create_all(self) -> None:
        """Create missing tables (idempotent)."""
        import models  # noqa: F401  (registers every table on SQLModel.metadata)

        async with self.engine.begin() as conn:
            await conn.run_sync(SQLModel.metadata.create_all)

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
