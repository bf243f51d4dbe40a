"""A start on a database already at the latest revision skips Alembic; any other database is migrated as before."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text

from core.db import MIGRATIONS, Database, alembic_config, head_revision


def test_the_head_read_from_the_files_is_alembics() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert [head_revision()] == ScriptDirectory.from_config(cfg).get_heads()


async def test_only_a_database_at_head_skips_the_migration(tmp_path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/h.db")
    assert not await db.at_head(), "a new database has no revision"
    await db.migrate()
    assert await db.at_head()
    async with db.engine.begin() as conn:
        await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "-1"))
    assert not await db.at_head(), "one revision behind"
    await db.migrate()
    async with db.engine.connect() as conn:
        columns = {row[1] for row in (await conn.execute(text("PRAGMA table_info(thread)"))).all()}
    assert await db.at_head() and {"pending", "stopped_mid_run"} <= columns
    await db.dispose()
