"""The LangGraph checkpoint saver, chosen by the database URL in force.

- SQLite (the embedded default): ``AsyncSqliteSaver`` on ``<data_dir>/checkpoints.db``.
- PostgreSQL (``DATABASE_URL=postgresql+asyncpg://...``): ``AsyncPostgresSaver`` on the same database as the tables,
  in its own ``checkpoint*`` tables. It speaks psycopg 3, so the SQLAlchemy URL is turned into a libpq URL
  (:func:`libpq_url`). ``setup()`` creates or upgrades its tables; concurrent starters (an API and a sync process
  on a fresh database) are serialized by an advisory lock, since the saver's own migrations are not safe to race.

The PostgreSQL modules are imported only when a PostgreSQL URL is used.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from core.db import MIGRATION_LOCK_KEY, is_sqlite_url

SAVER_LOCK_KEY = MIGRATION_LOCK_KEY + 1
"""Advisory lock serializing the checkpoint tables' setup across processes (not Alembic's key: see open_saver)."""
SAVER_LOCK_POLL_S = 0.1

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver

    from core.settings import Settings


def libpq_url(url: str) -> str:
    """The libpq (psycopg) form of a SQLAlchemy PostgreSQL URL.

    ``postgresql+asyncpg://u:p@h:5432/db?ssl=require`` becomes ``postgresql://u:p@h:5432/db?sslmode=require``: the
    driver suffix goes, the password stays (quoted as needed), and asyncpg's ``ssl`` query option is renamed to
    libpq's ``sslmode``.

    Args:
        url: a SQLAlchemy URL whose backend is ``postgresql``.

    Returns:
        A URL that ``psycopg.AsyncConnection.connect`` accepts.

    Raises:
        ValueError: the URL is not a PostgreSQL one.
    """
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"not a PostgreSQL URL: {parsed.render_as_string(hide_password=True)}")
    query = dict(parsed.query)
    if "ssl" in query and "sslmode" not in query:
        query["sslmode"] = query.pop("ssl")
    return parsed.set(drivername="postgresql", query=query).render_as_string(hide_password=False)


@asynccontextmanager
async def open_saver(settings: Settings) -> AsyncIterator[BaseCheckpointSaver[str]]:
    """Open the checkpoint saver for ``settings.db_url``; it is closed on exit.

    Args:
        settings: ``db_url`` chooses the kind; ``checkpoint_path`` is the SQLite file.

    Yields:
        An ``AsyncSqliteSaver`` (SQLite URL) or a set-up ``AsyncPostgresSaver`` (any other URL).
    """
    if is_sqlite_url(settings.db_url):
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        async with AsyncSqliteSaver.from_conn_string(str(settings.checkpoint_path)) as sqlite_saver:
            yield sqlite_saver
        return

    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg import AsyncConnection

    async with AsyncPostgresSaver.from_conn_string(libpq_url(settings.db_url)) as pg_saver:
        conn = pg_saver.conn
        assert isinstance(conn, AsyncConnection)  # from_conn_string opens one connection, not a pool
        # That connection is in autocommit mode: a session-level lock, released right after setup. It is polled,
        # not waited for: the saver's migrations run CREATE INDEX CONCURRENTLY, which waits for every open
        # transaction, so a starter blocked in pg_advisory_lock (one long statement) would deadlock the holder.
        # Its own key, too: Alembic's transaction-level lock is waited for inside a transaction.
        while not await _try_saver_lock(conn):
            await asyncio.sleep(SAVER_LOCK_POLL_S)
        try:
            await pg_saver.setup()
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (SAVER_LOCK_KEY,))
        yield pg_saver


async def _try_saver_lock(conn: Any) -> bool:
    """One ``pg_try_advisory_lock`` on ``conn`` (a psycopg connection with dict rows): whether it was taken."""
    row = await (await conn.execute("SELECT pg_try_advisory_lock(%s) AS got", (SAVER_LOCK_KEY,))).fetchone()
    return bool(row and row["got"])
