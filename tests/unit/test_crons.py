"""User crons: schedules, the table's operations, once-per-fire claims, coalescing and skipped fires."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from sqlmodel import select

from core.db import Database
from core.settings import Settings
from models.cron_tables import CronJob
from models.enums import ProjectStatus
from models.tables import Event, Project
from runtime.threads import OrchestratorRuntime, ThreadStateConflict
from services.crons import (
    CronError,
    CronNameTaken,
    UnknownCron,
    UnknownCronProject,
    add_cron,
    claim_fire,
    delete_cron,
    list_crons,
    next_fire,
    set_enabled,
)
from sync_workers import crons as cron_worker
from sync_workers.base import SyncContext

T0 = datetime(2026, 3, 4, 10, 0, 0, tzinfo=UTC)  # a Wednesday


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("0 2 * * *", T0, datetime(2026, 3, 5, 2, 0, tzinfo=UTC)),
        ("*/2 * * * * *", T0 + timedelta(seconds=1, microseconds=500), T0 + timedelta(seconds=2)),
        ("*/2 * * * * *", T0, T0 + timedelta(seconds=2)),  # strictly after: not T0 itself
        ("0 9 * * 1", T0, datetime(2026, 3, 9, 9, 0, tzinfo=UTC)),  # crontab's 1 is Monday
        ("0 9 * * 0", T0, datetime(2026, 3, 8, 9, 0, tzinfo=UTC)),  # and 0 is Sunday
        ("0 9 * * 7", T0, datetime(2026, 3, 8, 9, 0, tzinfo=UTC)),  # so is 7
        ("30 8 * * mon-fri", T0, datetime(2026, 3, 5, 8, 30, tzinfo=UTC)),
        ("*/15 * * * *", T0 + timedelta(minutes=1), T0 + timedelta(minutes=15)),
    ],
)
def test_next_fire_follows_crontab(expr: str, after: datetime, expected: datetime) -> None:
    assert next_fire(expr, after) == expected


@pytest.mark.parametrize(
    ("expr", "words"),
    [("* * * *", "has 4 fields"), ("61 * * * *", "not valid"), ("0 0 30 2 *", "never fires"), ("", "0 fields")],
)
def test_bad_schedules_are_refused_with_what_to_do(expr: str, words: str) -> None:
    with pytest.raises(CronError, match=words):
        next_fire(expr, T0)


async def _project(db: Database, name: str = "hello-api", thread_id: str | None = "t-cron00000001") -> int:
    async with db.session() as s:
        project = Project(name=name, status=ProjectStatus.active, thread_id=thread_id)
        s.add(project)
        await s.flush()
        assert project.id is not None
        return project.id


async def _trail(db: Database) -> list[tuple[str, str]]:
    async with db.session() as s:
        events = (await s.exec(select(Event).where(Event.subject_type == "cron").order_by(Event.id))).all()
    return [(e.to_status, e.actor or "") for e in events]


async def test_add_list_pause_resume_delete_and_the_trail(db: Database) -> None:
    await _project(db)
    async with db.session() as s:
        added = await add_cron(
            s,
            project="hello-api",
            schedule="0  2 * * *",
            message=" status? ",
            actor="cli:alice",
            name="nightly",
            now=T0,
        )
    assert added.next_fire_at == datetime(2026, 3, 5, 2, 0, tzinfo=UTC) and added.schedule == "0 2 * * *"
    assert added.message == "status?" and added.enabled and added.project == "hello-api"
    async with db.session() as s:
        with pytest.raises(CronNameTaken):
            await add_cron(s, project="hello-api", schedule="* * * * *", message="x", actor="cli:a", name="nightly")
        with pytest.raises(UnknownCronProject):
            await add_cron(s, project="nope", schedule="* * * * *", message="x", actor="cli:a")
        with pytest.raises(CronError, match="slug"):
            await add_cron(s, project="hello-api", schedule="* * * * *", message="x", actor="cli:a", name="Bad Name")
        with pytest.raises(CronError, match="characters"):
            await add_cron(s, project="hello-api", schedule="* * * * *", message="   ", actor="cli:a")
    async with db.session() as s:
        paused = await set_enabled(s, name="nightly", enabled=False, actor="cli:alice")
    assert not paused.enabled and paused.next_fire_at is None
    async with db.session() as s:
        resumed = await set_enabled(s, name="nightly", enabled=True, actor="token:ops", now=T0 + timedelta(days=3))
    assert resumed.next_fire_at == datetime(2026, 3, 8, 2, 0, tzinfo=UTC), "paused days are not made up"
    async with db.session() as s:
        listed = await list_crons(s, project="hello-api")
        assert [v.name for v in listed] == ["nightly"] and await list_crons(s, project="other") == []
        await delete_cron(s, name="nightly", actor="cli:alice")
    async with db.session() as s:
        assert await list_crons(s) == []
        with pytest.raises(UnknownCron):
            await set_enabled(s, name="nightly", enabled=False, actor="cli:alice")
        with pytest.raises(UnknownCron):
            await delete_cron(s, name="nightly", actor="cli:alice")
    assert await _trail(db) == [
        ("cron_added", "cli:alice"),
        ("cron_paused", "cli:alice"),
        ("cron_resumed", "token:ops"),
        ("cron_deleted", "cli:alice"),
    ]


async def _due_cron(db: Database, schedule: str = "*/2 * * * * *", late: timedelta = timedelta(hours=1)) -> CronJob:
    async with db.session() as s:
        await add_cron(s, project="hello-api", schedule=schedule, message="status of hello-api?", actor="cli:a")
        cron = (await s.exec(select(CronJob))).one()
        cron.next_fire_at = datetime.now(UTC) - late  # due since long ago, as after a downtime
        s.add(cron)
    return cron


async def test_two_schedulers_claiming_one_fire_get_it_once(db: Database, settings: Settings) -> None:
    await _project(db)
    cron = await _due_cron(db)
    others = [Database(settings.db_url) for _ in range(4)]
    try:
        now = datetime.now(UTC)
        wins = await asyncio.gather(*(claim_fire(d, cron=cron, now=now) for d in [db, *others]))
    finally:
        for d in others:
            await d.dispose()
    assert sorted(wins) == [False, False, False, False, True]
    async with db.session() as s:
        row = (await s.exec(select(CronJob))).one()
    assert row.fire_seq == 1
    assert await claim_fire(db, cron=cron, now=now) is False, "a stale read claims nothing"


class FakeRuntime:
    """Records the turns started; ``busy`` threads refuse as the real runtime does."""

    def __init__(self, busy: set[str] | None = None) -> None:
        self.busy = busy or set()
        self.turns: list[tuple[str, str | None, str]] = []

    async def start_turn(self, text: str, thread_id: str | None = None, *, actor: Any) -> AsyncIterator[Any]:
        if thread_id in self.busy:
            raise ThreadStateConflict(f"thread {thread_id} waits for an answer to its pending question")
        self.turns.append((text, thread_id, actor.name))
        yield None


async def test_missed_fires_coalesce_into_one_and_the_next_is_in_the_future(db: Database, settings: Settings) -> None:
    await _project(db)
    await _due_cron(db, late=timedelta(hours=5))
    fake = FakeRuntime()
    ctx = SyncContext(settings=settings, db=db)
    first = await cron_worker.run_pass(ctx, cast(OrchestratorRuntime, fake))
    again = await cron_worker.run_pass(ctx, cast(OrchestratorRuntime, fake))
    assert fake.turns == [("status of hello-api?", "t-cron00000001", "system:cron")]
    assert (first.updated, first.resumed, first.errors) == (1, 1, [])
    assert again.updated == 0
    async with db.session() as s:
        row = (await s.exec(select(CronJob))).one()
    assert row.next_fire_at is not None and row.next_fire_at > datetime.now(UTC) - timedelta(seconds=1)
    assert row.fire_seq == 1 and row.last_outcome == "posted"
    assert (await _trail(db))[-1] == ("cron_fired", "system:cron")


async def test_a_busy_thread_or_a_threadless_project_skips_the_fire_with_its_reason(
    db: Database, settings: Settings
) -> None:
    await _project(db)
    await _project(db, name="no-thread", thread_id=None)
    await _due_cron(db)
    async with db.session() as s:
        await add_cron(s, project="no-thread", schedule="* * * * *", message="hi", actor="cli:a", name="lonely")
        lonely = (await s.exec(select(CronJob).where(CronJob.name == "lonely"))).one()
        lonely.next_fire_at = datetime.now(UTC) - timedelta(minutes=1)
        s.add(lonely)
    fake = FakeRuntime(busy={"t-cron00000001"})
    summary = await cron_worker.run_pass(SyncContext(settings=settings, db=db), cast(OrchestratorRuntime, fake))
    assert fake.turns == [] and summary.updated == 2 and summary.resumed == 0 and summary.errors == []
    async with db.session() as s:
        outcomes = {c.name: c.last_outcome or "" for c in (await s.exec(select(CronJob))).all()}
        reasons = (await s.exec(select(Event.reason).where(Event.to_status == "cron_skipped"))).all()
    assert outcomes["lonely"] == "skipped: project no-thread has no thread yet"
    busy = next(v for k, v in outcomes.items() if k != "lonely")
    assert busy.startswith("skipped: thread busy:") and "pending question" in busy
    assert len(reasons) == 2


async def test_a_paused_cron_is_not_fired_even_when_due(db: Database, settings: Settings) -> None:
    await _project(db)
    cron = await _due_cron(db)
    async with db.session() as s:
        await set_enabled(s, name=cron.name, enabled=False, actor="cli:a")
    assert await claim_fire(db, cron=cron, now=datetime.now(UTC)) is False
    fake = FakeRuntime()
    summary = await cron_worker.run_pass(SyncContext(settings=settings, db=db), cast(OrchestratorRuntime, fake))
    assert summary.updated == 0 and fake.turns == []
