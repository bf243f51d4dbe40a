"""The production path on a real PostgreSQL 15 (a throwaway cluster on 127.0.0.1, see tests/fixtures/postgres.py):
migrations, a project's status change with its Event, the sync lock across processes (kill -9, a killed lock
connection, a frozen one), and the runtime's checkpoints through AsyncPostgresSaver with a real interrupt/resume.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlmodel import select

import sync_workers.lock as lock_module
from core.checkpoints import libpq_url, open_saver
from core.db import Database, alembic_config
from core.settings import Settings
from models.enums import ProjectStatus as P
from models.tables import Event, Project
from models.transitions import IllegalTransition, transition_project
from sync_workers.lock import SYNC_LOCK_KEY, SyncLock
from tests.conftest import REPO_ROOT
from tests.integration.helpers import REQUEST, cli_env, run_turn

HOLDER = """
import asyncio, sys
from core.settings import Settings
from sync_workers.lock import SyncLock

async def main() -> None:
    lost = asyncio.Event()
    lock = SyncLock(Settings(), check_s=float(sys.argv[1]), on_lost=lost)
    if not await lock.acquire(wait=False):
        print("busy", flush=True)
        return
    print("held", flush=True)
    await lost.wait()
    print("lost:", lock.lost_reason, flush=True)
    held = await lock.still_held()
    await lock.release()
    print("released; still_held", held, flush=True)

asyncio.run(main())
"""
"""A sync holder in its own process: takes the lock, waits until it is lost, releases, says what happened."""


def pg_env(settings: Settings) -> dict[str, str]:
    assert settings.database_url
    return {**cli_env(settings), "DATABASE_URL": settings.database_url}


@contextmanager
def holder_process(settings: Settings, check_s: float = 30.0) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(check_s)],
        cwd=REPO_ROOT,
        env=pg_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def lock_backend_pid(settings: Settings) -> int | None:
    """The server pid of the session holding the sync lock (what an administrator would terminate)."""
    assert settings.database_url
    with psycopg.connect(libpq_url(settings.database_url)) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = 0 AND objid = %s",
            (SYNC_LOCK_KEY,),
        ).fetchone()
    return None if row is None else int(row[0])


def terminate(settings: Settings, backend_pid: int) -> None:
    assert settings.database_url
    with psycopg.connect(libpq_url(settings.database_url)) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (backend_pid,)).fetchone() == (True,)


# --- schema ---------------------------------------------------------------------------------------------------------


async def test_migrations_apply_on_postgres_and_match_the_models(pg_url: str) -> None:
    db = Database(pg_url)
    try:
        await db.migrate()
        await db.migrate()  # idempotent
        async with db.engine.begin() as conn:
            assert conn.dialect.name == "postgresql"
            await conn.run_sync(lambda c: command.check(alembic_config(c)))  # no drift between models and revisions
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            heads = (await conn.execute(text("SELECT count(*) FROM alembic_version"))).scalar()
    finally:
        await db.dispose()
    assert {"project", "server", "portlease", "deployment", "event", "incident", "synccursor", "llmcall"} <= tables
    assert heads == 1


def test_three_processes_setting_up_one_new_postgres_database_at_once(pg_settings: Settings) -> None:
    # Tables (Alembic) and checkpoint tables (the saver's own migrations) both race badly without a lock.
    code = (
        "import asyncio\n"
        "from core.checkpoints import open_saver\n"
        "from core.db import Database\n"
        "from core.settings import Settings\n"
        "async def main():\n"
        "    s = Settings()\n"
        "    db = Database(s.db_url)\n"
        "    await db.migrate()\n"
        "    await db.dispose()\n"
        "    async with open_saver(s) as saver:\n"
        "        print(type(saver).__name__)\n"
        "asyncio.run(main())\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], cwd=REPO_ROOT, env=pg_env(pg_settings), stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert [o.strip() for o in outs] == ["AsyncPostgresSaver"] * 3


async def test_a_project_status_change_and_its_event_round_trip(pg_url: str) -> None:
    db = Database(pg_url)
    try:
        await db.migrate()
        async with db.session() as s:
            project = Project(name="pg-api", status=P.draft, spec={"endpoints": ["/health"], "n": 1})
            s.add(project)
            await s.flush()
            assert project.id is not None
            pid = project.id
            assert await transition_project(s, pid, P.estimated, reason="estimated by the PO", thread_id="t-1") == (
                P.draft
            )
        with pytest.raises(IllegalTransition):
            async with db.session() as s:
                await transition_project(s, pid, P.active, reason="skipping ahead")
        async with db.session() as s:
            [again] = (await s.exec(select(Project))).all()
            events = (await s.exec(select(Event).where(Event.subject_id == pid))).all()
            raw_status = (await s.exec(text("SELECT status FROM project"))).scalar()  # type: ignore[call-overload]
    finally:
        await db.dispose()
    assert again.status == P.estimated and again.spec == {"endpoints": ["/health"], "n": 1}
    assert again.created_at.tzinfo is not None
    assert raw_status in ("estimated", P.estimated.name)
    assert [(e.from_status, e.to_status, e.reason, e.thread_id) for e in events] == [
        ("draft", "estimated", "estimated by the PO", "t-1")
    ], "one Event for the move, none for the refused one"


# --- the sync lock --------------------------------------------------------------------------------------------------


async def test_pg_sync_lock_is_exclusive_across_processes_and_freed_by_kill_9(pg_settings: Settings) -> None:
    with holder_process(pg_settings) as holder:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with holder_process(pg_settings) as contender:
            assert contender.communicate(timeout=30)[0].strip() == "busy", "a second process may not take it"
        told: list[int | None] = []
        mine = SyncLock(pg_settings, poll_s=0.05, check_s=0)
        assert not await mine.acquire(wait=False, on_wait=told.append)
        assert told == [holder.pid], "the waiter names the holder's pid"

        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        # The server ends the dead client's session, and with it the advisory lock.
        assert await asyncio.wait_for(mine.acquire(), 20)
    assert await mine.still_held()
    await mine.release()
    assert lock_backend_pid(pg_settings) is None, "release unlocks at once"


async def test_a_holder_whose_lock_connection_is_terminated_stops_and_releases_cleanly(pg_settings: Settings) -> None:
    # check_s=30: only the connection's termination can make it notice within the test's deadline.
    with holder_process(pg_settings, check_s=30) as holder:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        backend = lock_backend_pid(pg_settings)
        assert backend is not None
        terminate(pg_settings, backend)
        successor = SyncLock(pg_settings, poll_s=0.05, check_s=0)
        assert await asyncio.wait_for(successor.acquire(), 10)
        out, err = holder.communicate(timeout=10)
    assert holder.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("lost: the lock connection to PostgreSQL was closed"), out
    assert lines[1] == "released; still_held False", "release() on the dead connection did not raise"
    assert await successor.still_held(), "the old holder's release leaves the new holder's lock alone"
    assert lock_backend_pid(pg_settings) is not None
    await successor.release()


async def test_the_watchdog_notices_a_terminated_connection_by_itself(
    pg_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_listener(self: SyncLock, conn: object) -> None:
        return None

    monkeypatch.setattr(SyncLock, "_watch_termination", no_listener)  # the periodic check alone must find it
    lost = asyncio.Event()
    lock = SyncLock(pg_settings, check_s=0.1, on_lost=lost)
    assert await lock.acquire(wait=False) and await lock.still_held()
    backend = lock_backend_pid(pg_settings)
    assert backend is not None
    terminate(pg_settings, backend)
    await asyncio.wait_for(lost.wait(), 5)
    assert lock.lost.is_set() and not lock.held and not await lock.still_held()
    assert lock.lost_reason is not None and "lock connection failed" in lock.lost_reason
    await lock.release()  # a dead connection: no exception
    other = SyncLock(pg_settings, check_s=0)
    assert await other.acquire(wait=False)
    await other.release()


async def test_a_frozen_lock_connection_counts_as_lost_and_release_does_not_hang(
    pg_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A network cut looks like a server that stops answering: freeze the lock's backend with SIGSTOP.
    monkeypatch.setattr(lock_module, "CHECK_TIMEOUT_S", 0.5)
    lost = asyncio.Event()
    lock = SyncLock(pg_settings, check_s=0.1, on_lost=lost)
    assert await lock.acquire(wait=False)
    backend = lock_backend_pid(pg_settings)
    assert backend is not None
    os.kill(backend, signal.SIGSTOP)
    try:
        await asyncio.wait_for(lost.wait(), 5)
        assert lock.lost_reason is not None and "did not answer" in lock.lost_reason
        await asyncio.wait_for(lock.release(), 5)
    finally:
        os.kill(backend, signal.SIGCONT)


# --- checkpoints ----------------------------------------------------------------------------------------------------


def test_libpq_url_keeps_credentials_and_renames_asyncpg_options() -> None:
    assert libpq_url("postgresql+asyncpg://u:p%40ss@db:5432/orch?ssl=require") == (
        "postgresql://u:p%40ss@db:5432/orch?sslmode=require"
    )
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        libpq_url("sqlite+aiosqlite:///x.db")


@pytest.mark.slow
async def test_the_po_graph_checkpoints_on_postgres_and_resumes_from_another_process(pg_settings: Settings) -> None:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    from runtime.threads import OrchestratorRuntime, UnknownThread

    async with OrchestratorRuntime(pg_settings) as rt:
        assert isinstance(rt.graph.checkpointer, AsyncPostgresSaver)
        assert not await rt.thread_exists("t-none")
        with pytest.raises(UnknownThread):
            await rt.pending("t-none")

    events = await run_turn(pg_settings, REQUEST, "t-pg")
    [ask] = [ev for ev in events if ev.kind == "interrupt"]
    assert ask.payload and ask.payload["kind"] == "deploy_approval"
    assert not (pg_settings.data_dir / "checkpoints.db").exists(), "no SQLite checkpoint file on PostgreSQL"
    assert not (pg_settings.data_dir / "orchestrator.db").exists()
    assert pg_settings.database_url
    with psycopg.connect(libpq_url(pg_settings.database_url)) as conn:
        saved = conn.execute("SELECT count(*) FROM checkpoints WHERE thread_id = 't-pg'").fetchone()
    assert saved is not None and saved[0] > 0

    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "resume", "t-pg", "--reject", "not on a Friday"],
        cwd=REPO_ROOT, env=pg_env(pg_settings), capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "not deployed (not on a Friday)" in " ".join(done.stdout.split())
    async with open_saver(pg_settings) as saver:
        state = await saver.aget_tuple({"configurable": {"thread_id": "t-pg", "checkpoint_ns": ""}})
    assert state is not None and not [w for w in state.pending_writes or [] if w[1] == "__interrupt__"]
    db = Database(pg_settings.db_url)
    try:
        async with db.session() as s:
            [project] = (await s.exec(select(Project))).all()
    finally:
        await db.dispose()
    assert project.status == P.verified
