"""A kill -9 in the middle of the first migration leaves nothing half-built, and a half-built schema is dealt with."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from core.db import Database, SchemaStateError
from models.enums import ProjectStatus
from models.tables import Project
from tests.fixtures.die_mid_migration import kill_mid_migration, migrate_and_use


def tables_of(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")}


async def head_revision(tmp_path: Path) -> str:
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/reference.db")
    try:
        await db.migrate()
        async with db.engine.connect() as conn:
            return str((await conn.execute(text("select version_num from alembic_version"))).scalar_one())
    finally:
        await db.dispose()


@pytest.mark.parametrize("creates", [3, 1, 26])  # the third; the first; the last of the whole chain
async def test_a_kill_after_a_create_leaves_no_table_and_the_next_start_migrates(tmp_path: Path, creates: int) -> None:
    path = tmp_path / "orchestrator.db"
    kill_mid_migration(f"sqlite+aiosqlite:///{path}", creates=creates)

    assert tables_of(path) == set()  # every CREATE was rolled back with the rest of the migration
    assert await migrate_and_use(f"sqlite+aiosqlite:///{path}") == await head_revision(tmp_path)


async def half_built(path: Path, *, projects: int) -> None:
    """The state the old non-atomic first migration left: some tables, an ``alembic_version`` without a row."""
    db = Database(f"sqlite+aiosqlite:///{path}")
    await db.migrate()
    async with db.session() as s:
        s.add_all(Project(name=f"p{i}", status=ProjectStatus.draft) for i in range(projects))
    await db.dispose()
    with sqlite3.connect(path) as conn:
        conn.execute("delete from alembic_version")
        for (name,) in conn.execute("select name from sqlite_master where type = 'table'").fetchall():
            if name not in {"alembic_version", "project", "server", "event"}:
                conn.execute(f'drop table "{name}"')


async def test_an_empty_half_built_schema_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "orchestrator.db"
    await half_built(path, projects=0)

    assert await migrate_and_use(f"sqlite+aiosqlite:///{path}") == await head_revision(tmp_path)


async def test_a_half_built_schema_holding_rows_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "orchestrator.db"
    await half_built(path, projects=2)
    before = tables_of(path)

    db = Database(f"sqlite+aiosqlite:///{path}")
    with pytest.raises(SchemaStateError) as err:
        await db.migrate()
    await db.dispose()

    message = str(err.value)
    assert str(path) in message and "alembic_version" in message and "project (2 rows)" in message
    assert tables_of(path) == before
    with sqlite3.connect(path) as conn:
        assert conn.execute("select count(*) from project").fetchone() == (2,)
