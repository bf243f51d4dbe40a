"""Shared fixtures: settings in a temp data dir, on the recorded model, with ports no other test uses."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from core.db import Database
from core.settings import Settings
from tests.fixtures.postgres import PostgresServer

REPO_ROOT = Path(__file__).resolve().parent.parent
WHEELHOUSE = REPO_ROOT / ".wheelhouse"
"""Wheels project venvs are built from in tests (``make`` downloads them): tests never reach a package index.
Set in the environment, so child processes (the CLI, the API) build their venvs offline too."""
os.environ["ORCH_SANDBOX_FIND_LINKS"] = str(WHEELHOUSE)
os.environ["ORCH_SANDBOX_OFFLINE"] = "true"


def free_port_block(size: int = 20) -> int:
    """The first port of ``size`` consecutive ports that are free now (best effort, checked by binding)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + size > 65000:
            continue
        ok = True
        for port in range(base, base + size):
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free block of ports on 127.0.0.1")


@pytest.fixture()
def settings(tmp_path: Path) -> Iterator[Settings]:
    """Settings for one test: fresh data dir, replay model, a private port range, short timeouts, and a release root
    of its own that a service's user can reach (pytest's tmp_path is 0700 root: outside it, removed afterwards).
    """
    base = free_port_block()
    releases = Path(tempfile.mkdtemp(prefix="orchestrator-test-releases-"))
    releases.chmod(0o755)
    try:
        yield Settings(
            data_dir=tmp_path / "data",
            model="replay/hello-api",
            port_range_start=base,
            port_range_end=base + 19,
            health_timeout_s=15,
            deploy_timeout_s=120,
            test_timeout_s=60,
            release_root=releases,
        )
    finally:
        shutil.rmtree(releases, ignore_errors=True)


@pytest.fixture()
async def db(settings: Settings) -> AsyncIterator[Database]:
    """A fresh database file with every table (a real SQLite file, WAL), disposed after the test."""
    settings.ensure_data_dir()
    database = Database(settings.db_url)
    await database.migrate()
    yield database
    await database.dispose()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 for the whole session, started on first use (see
    tests/fixtures/postgres.py; ``make postgres`` installs the server when it is missing)."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def pg_url(pg_server: PostgresServer) -> str:
    """A SQLAlchemy (asyncpg) URL of a new, empty database of its own for one test."""
    return pg_server.url(pg_server.create_database())


@pytest.fixture()
def pg_settings(settings: Settings, pg_url: str) -> Settings:
    """``settings`` with ``DATABASE_URL`` on that database (tables, checkpoints and the sync lock on PostgreSQL)."""
    return settings.model_copy(update={"database_url": pg_url})
