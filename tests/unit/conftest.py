"""Unit-tier fixtures: a real SQLite file database (WAL) in the test's temp data dir."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from core.db import Database
from core.settings import Settings


@pytest.fixture()
async def db(settings: Settings) -> AsyncIterator[Database]:
    """A fresh database file with every table, disposed after the test."""
    settings.ensure_data_dir()
    database = Database(settings.db_url)
    await database.migrate()
    yield database
    await database.dispose()
