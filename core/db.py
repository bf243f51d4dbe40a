"""Async database engine and sessions: SQLite in WAL mode by default, PostgreSQL (asyncpg) in production.

See STACK_FACTS: ``expire_on_commit=False`` avoids MissingGreenlet on attribute access after commit, and WAL plus a
busy timeout lets several processes share one SQLite file. The pragmas are SQLite's only; on PostgreSQL the pool
pings a connection before handing it out, so a restarted server costs no failed request.

Schema set-up is all or nothing: every migration of one start runs in one database transaction, so a process
killed part-way leaves the schema as it was before (see :meth:`Database.migrate`).
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import logging
import os
import re
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from sqlalchemy import URL, Connection, event, func, inspect, make_url, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from sqlmodel.ext.asyncio.session import AsyncSession

from core.audit_journal import install_audit_journal

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATION_LOCK_KEY = 0x4D494752
"""ASCII "MIGR": the PostgreSQL advisory lock key that serializes schema setup (Alembic and the checkpoint tables)."""

log = logging.getLogger(__name__)


class SchemaStateError(RuntimeError):
    """The database holds tables of this schema but no Alembic revision, and rows in some of them.

    A schema set-up that ran each statement on its own stopped part-way, and rows were written since; the message
    names the database, the tables holding rows and what to do.
    """


class ReadOnlyDatabase(RuntimeError):
    """The SQLite file is read-only for this process and its schema is not at the current revision.

    It can be listed only once someone who may write it has migrated it (any command run as the data dir's owner).
    """


def read_only_sqlite_url(url: str) -> URL | None:
    """``url`` opened read-only, when it names a SQLite file that exists and this process may not write.

    SQLite needs to write beside a WAL database it opens (the ``-shm`` index); in a read-only folder a plain open
    fails. The returned URL opens the file with SQLite's ``mode=ro``, plus ``immutable=1`` when no ``-wal`` file is
    there (nothing is waiting to be checkpointed; https://www.sqlite.org/uri.html). None: open ``url`` as usual.
    """
    parsed = make_url(url)
    path = parsed.database
    if not is_sqlite_url(url) or not path or path == ":memory:" or path.startswith("file:"):
        return None
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isfile(path) or (os.access(path, os.W_OK) and os.access(folder, os.W_OK)):
        return None
    query = {"mode": "ro", "uri": "true", **({} if os.path.exists(f"{path}-wal") else {"immutable": "1"})}
    return parsed.set(database=f"file:{quote(os.path.abspath(path))}", query=query)


def _sqlite_read_only_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA query_only=ON")
    cur.close()


def is_sqlite_url(url: str) -> bool:
    """Whether ``url`` is a SQLite one (the embedded default); anything else is taken for PostgreSQL."""
    return url.startswith("sqlite")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_manual_transactions(dbapi_conn: Any, record: Any) -> None:
    # pysqlite's legacy mode sends no BEGIN before DDL, so each CREATE would commit on its own; with
    # isolation_level None it sends none at all and _begin_immediate below opens every transaction instead
    # (SQLAlchemy's SQLite docs: "Enabling Non-Legacy SQLite Transactional Modes").
    _sqlite_pragmas(dbapi_conn, record)
    dbapi_conn.isolation_level = None


def _begin_immediate(conn: Connection) -> None:
    # IMMEDIATE takes the write lock up front (waiting out other writers under the busy timeout) rather than
    # failing on a read-to-write upgrade after another process wrote.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """One engine per process and a session factory.

    Args:
        url: an async SQLAlchemy URL, e.g. ``sqlite+aiosqlite:///data/orchestrator.db`` or
            ``postgresql+asyncpg://...``.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        is_sqlite = is_sqlite_url(url)
        read_only = read_only_sqlite_url(url)
        self.read_only = read_only is not None
        """The SQLite file is opened read-only (this process may not write it): reads work, writes fail."""
        if read_only is not None:
            self.engine: AsyncEngine = create_async_engine(read_only, connect_args={"timeout": 30})
            event.listen(self.engine.sync_engine, "connect", _sqlite_read_only_pragmas)
        elif is_sqlite:
            self.engine = create_async_engine(url, connect_args={"timeout": 30})
        else:
            self.engine = create_async_engine(url, pool_pre_ping=True)
        self.lease_lock = asyncio.Lock()
        """Serializes port leasing within this process; across processes the unique keys decide."""
        install_audit_journal()  # every audit trail row also enters the domain event journal
        if is_sqlite and read_only is None:  # the read-only engine has its own pragmas (these would write)
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)

    async def migrate(self) -> None:
        """Bring the schema to the latest Alembic revision (idempotent), all at once or not at all.

        Every pending revision, and the ``alembic_version`` row, is applied in ONE transaction: a process killed
        part-way leaves the schema as it was, and the next start migrates again from there. PostgreSQL's DDL is
        transactional as it is; on a SQLite file the migration runs on a connection of its own on which the driver's
        legacy transaction handling is off and ``BEGIN IMMEDIATE`` opens the transaction, so CREATE, ALTER and DROP
        are part of it (a ``:memory:`` database keeps its one connection, and no crash to survive).

        Concurrent starters are serialized: on SQLite by a file lock beside the database file (and SQLite's write
        lock), on PostgreSQL by a transaction-level advisory lock taken in the migration's own transaction; a second
        starter waits, then finds the schema at head and does nothing.

        A database an older set-up left half-built (tables of this schema, no ``alembic_version`` row) is rebuilt
        when none of those tables holds a row, which loses nothing; otherwise it is refused untouched.

        Raises:
            SchemaStateError: a half-built schema whose tables hold rows (the message says which and what to do).
            ReadOnlyDatabase: the file is read-only for this process (:attr:`read_only`) and not at head.
            sqlalchemy.exc.SQLAlchemyError: the database failed or is unreachable; nothing of the migration stays.
        """
        if await self.at_head():  # the common start: one query, and Alembic (~0.3 s) is not even imported
            return
        if self.read_only:
            raise ReadOnlyDatabase(
                f"{make_url(self.url).database} is read-only for this user and its schema is not at the current "
                "revision: run any command once as the data dir's owner to migrate it"
            )
        where = self._where()
        async with self._migration_lock():
            engine = self._migration_engine()
            try:
                async with engine.begin() as conn:
                    if not is_sqlite_url(self.url):
                        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                    await conn.run_sync(_upgrade_to_head, where)
            finally:
                if engine is not self.engine:
                    await engine.dispose()

    async def at_head(self) -> bool:
        """Whether the database's Alembic revision is the migrations' single head (False when in doubt).

        Reads ``alembic_version`` only; a missing table, another revision, or migrations with several heads (or a
        merge) all answer False, and :meth:`migrate` then runs Alembic as usual.
        """
        head = head_revision()
        if head is None:
            return False
        try:
            async with self.engine.connect() as conn:
                found = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
        except SQLAlchemyError:
            return False
        return list(found) == [head]

    def _migration_engine(self) -> AsyncEngine:
        """The engine the migration runs on: this one, or on a SQLite file an unpooled one with real transactions."""
        path = self.engine.url.database
        if not is_sqlite_url(self.url) or not path or path == ":memory:":
            return self.engine
        engine = create_async_engine(self.url, connect_args={"timeout": 30}, poolclass=NullPool)
        event.listen(engine.sync_engine, "connect", _sqlite_manual_transactions)
        event.listen(engine.sync_engine, "begin", _begin_immediate)
        return engine

    def _where(self) -> str:
        """The database as a person knows it: the SQLite file's path, or the URL without its password."""
        if is_sqlite_url(self.url):
            return str(self.engine.url.database)
        return self.engine.url.render_as_string(hide_password=True)

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


_REVISION = re.compile(r"""^revision\s*(?::[^=]*)?=\s*["']([0-9A-Za-z_]+)["']""", re.MULTILINE)
_DOWN = re.compile(r"""^down_revision\s*(?::[^=]*)?=\s*(?:["']([0-9A-Za-z_]+)["']|None)\s*$""", re.MULTILINE)


@functools.cache
def head_revision() -> str | None:
    """The single head of ``models/migrations/versions``, read from the files' text without importing Alembic.

    Returns:
        The revision id no other revision names as its ``down_revision``; None if that is not exactly one, or a file
        does not declare its revisions as plain strings (a merge's tuple, say): callers then ask Alembic itself.
    """
    revisions, downs = set(), set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        if path.name == "__init__.py":
            continue
        source = path.read_text()
        revision, down = _REVISION.search(source), _DOWN.search(source)
        if revision is None or down is None:
            return None
        revisions.add(revision.group(1))
        if down.group(1):
            downs.add(down.group(1))
    heads = revisions - downs
    return heads.pop() if len(heads) == 1 else None


def _upgrade_to_head(conn: Connection, where: str) -> None:
    from alembic import command

    _clear_half_built(conn, where)
    command.upgrade(alembic_config(conn), "head")


def _clear_half_built(conn: Connection, where: str) -> None:
    """Drop the tables a set-up stopped part-way left behind, when they hold no row; else refuse.

    "Half-built" is: no row in ``alembic_version`` (the table missing or empty) while tables of the models exist.
    Only tables of the models are looked at and dropped (others, such as the checkpoint tables PostgreSQL keeps in
    the same database, are left alone). Runs inside the migration's transaction, so the drop and the rebuild are
    one change.

    Raises:
        SchemaStateError: some of those tables hold rows; nothing is changed.
    """
    from sqlmodel import SQLModel

    import models  # noqa: F401  (registers every table on SQLModel.metadata)

    present = set(inspect(conn).get_table_names())
    if "alembic_version" in present and conn.execute(text("SELECT count(*) FROM alembic_version")).scalar():
        return
    tables = [t for t in SQLModel.metadata.sorted_tables if t.name in present]
    if not tables:
        return
    counts = {t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one()) for t in tables}
    held = [f"{name} ({n} row{'' if n == 1 else 's'})" for name, n in counts.items() if n]
    if held:
        raise SchemaStateError(
            f"{where}: tables of the schema exist but alembic_version records no revision: an earlier schema set-up "
            f"stopped part-way, and rows were written since in {', '.join(held)}, so it is not rebuilt. Restore a "
            "backup, or move the database aside (keeping those rows) and start again with a new one."
        )
    log.warning("%s: rebuilding a half-built, empty schema (tables %s)", where, ", ".join(sorted(counts)))
    SQLModel.metadata.drop_all(conn, tables=tables)


def alembic_config(connection: Any) -> Config:
    """An Alembic config running on ``connection`` (see models/migrations/env.py)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


async def new_revision(message: str) -> None:
    """Autogenerate a migration from the models' difference to the latest revision (``make migration MSG=...``)."""
    from alembic import command

    import models  # noqa: F401  (registers every table on SQLModel.metadata)

    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite+aiosqlite:///{tmp}/schema.db")
        await db.migrate()
        async with db.engine.begin() as conn:
            await conn.run_sync(lambda c: command.revision(alembic_config(c), message=message, autogenerate=True))
        await db.dispose()
