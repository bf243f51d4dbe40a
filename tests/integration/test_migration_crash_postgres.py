"""On a real PostgreSQL: a kill -9 in the middle of the first migration leaves no table, and the next start migrates."""

from __future__ import annotations

import psycopg
from sqlalchemy import text

from core.checkpoints import libpq_url
from core.db import Database
from models.tables import Project
from tests.fixtures.die_mid_migration import kill_mid_migration, migrate_and_use


def tables_of(url: str) -> set[str]:
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute("select tablename from pg_tables where schemaname = 'public'").fetchall()
    return {r[0] for r in rows}


async def test_a_kill_after_the_third_create_leaves_no_table_and_the_next_start_migrates(pg_url: str) -> None:
    kill_mid_migration(pg_url, creates=3)

    assert tables_of(pg_url) == set()
    revision = await migrate_and_use(pg_url)

    again = Database(pg_url)
    await again.migrate()  # the next start finds the schema at head and changes nothing
    async with again.engine.connect() as conn:
        assert (await conn.execute(text("select version_num from alembic_version"))).scalar_one() == revision
    async with again.session() as s:
        assert (await s.get(Project, 1)) is not None
    await again.dispose()
