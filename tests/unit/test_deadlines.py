"""Deadlines of pending interrupts: the payload fields, track()'s idempotence, once-only claims, the wording."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlmodel import col, select

from core.db import Database
from core.settings import Settings
from models.interrupts import ANSWER_SCHEMAS, DeployApprovalRequest
from models.tables import ThreadRecord
from models.time_tables import InterruptDeadline
from runtime.answers import Answer, answer_value
from services import deadlines
from services.deadlines import POLICIES, deadline_fields, default_answer, track

T0 = datetime(2026, 3, 4, 10, 0, 0, 123456, tzinfo=UTC)
THREAD = "t-0123456789ab"


def approval(deadline: str | None) -> dict[str, Any]:
    return {"kind": "deploy_approval", "project": "hello-api", "deadline": deadline, "on_deadline": "reject"}


async def all_rows(db: Database) -> list[InterruptDeadline]:
    async with db.session() as s:
        return list((await s.exec(select(InterruptDeadline).order_by(col(InterruptDeadline.id)))).all())


def test_payload_fields_follow_the_settings_of_each_kind() -> None:
    settings = Settings(deadline_deploy_approval_s=3600, deadline_guidance_s=0)
    fields = deadline_fields(settings, "deploy_approval", now=T0)
    assert fields == {"deadline": "2026-03-04T11:00:00+00:00", "on_deadline": "reject"}
    assert deadline_fields(settings, "engineering_guidance", now=T0) == {"deadline": None, "on_deadline": None}
    assert deadline_fields(Settings(), "waiting_for_resources")["deadline"] is None, "no deadline by default"
    assert deadline_fields(Settings(), "budget_exhausted", now=T0)["on_deadline"] == "stop"
    assert deadline_fields(Settings(), "no_such_kind", now=T0)["deadline"] is None
    request = DeployApprovalRequest(
        question="q", project="p", commit="c", server="s", port=1, url="u", tests={}, **fields
    )
    assert request.model_dump()["deadline"] == "2026-03-04T11:00:00+00:00"


def test_the_reminder_points_are_parsed_sorted_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_DEADLINE_REMINDERS", "600, 3600,600")
    assert Settings().deadline_reminders == [3600, 600]
    monkeypatch.setenv("ORCH_DEADLINE_REMINDERS", "")
    assert Settings().deadline_reminders == []
    monkeypatch.setenv("ORCH_DEADLINE_REMINDERS", "0")
    with pytest.raises(ValueError, match="each > 0"):
        Settings()


@pytest.mark.parametrize("kind", sorted(POLICIES))
def test_every_default_answer_fits_its_question(kind: str) -> None:
    given = default_answer(Settings(deadline_resources_s=60), kind)
    value = answer_value({"kind": kind}, Answer(given["kind"], given["text"]), by="system:deadline")  # type: ignore[arg-type]
    ANSWER_SCHEMAS[kind].model_validate(value)
    if kind == "deploy_approval":
        assert value["decision"] == "reject" and value["reason"] == "no answer within 24 h"
    if kind in ("engineering_guidance", "budget_exhausted"):
        assert value.get("answer") == "stop" or value.get("action") == "stop"


def test_durations_in_words() -> None:
    said = [deadlines.human_duration(s) for s in (86400, 5400, 600, 3, 0)]
    assert said == ["24 h", "1 h 30 min", "10 min", "3 s", "0 s"]


async def test_track_keeps_the_first_deadline_and_corrects_a_re_run_payload(db: Database, settings: Settings) -> None:
    first = approval("2026-03-04T11:00:00+00:00")
    async with db.session() as s:
        s.add(ThreadRecord(id=THREAD, pending=[{"id": "i-1", "payload": dict(first)}]))
    [row] = await track(db, settings, THREAD, [("i-1", first)])
    assert row.deadline_at == datetime(2026, 3, 4, 11, tzinfo=UTC) and row.status == "pending"
    assert row.default_answer == {"kind": "reject", "text": "no answer within 24 h"}

    rerun = approval("2026-03-04T12:30:00+00:00")  # the node re-ran after a sibling branch was resumed
    [kept] = await track(db, settings, THREAD, [("i-1", rerun)])
    assert kept.id == row.id and await all_rows(db) == [kept]
    assert rerun["deadline"] == "2026-03-04T11:00:00+00:00", "the payload shows the deadline that is enforced"
    async with db.session() as s:
        record = await s.get(ThreadRecord, THREAD)
    assert record is not None and record.pending is not None
    assert record.pending[0]["payload"]["deadline"] == "2026-03-04T11:00:00+00:00"

    await track(db, settings, THREAD, [("i-1", approval("2026-03-04T11:00:00+00:00"))])
    assert len(await all_rows(db)) == 1, "the same interrupt is tracked once"


async def test_track_settles_what_is_no_longer_pending_but_not_a_timeout(db: Database, settings: Settings) -> None:
    await track(db, settings, THREAD, [("i-1", approval("2026-03-04T11:00:00+00:00"))])
    await track(db, settings, "t-other0000000", [("i-9", approval("2026-03-04T11:00:00+00:00"))])
    await track(db, settings, THREAD, [("i-2", approval("2026-03-05T11:00:00+00:00"))])
    rows = {r.interrupt_id: r for r in await all_rows(db)}
    assert rows["i-1"].status == "answered" and rows["i-1"].settled_at is not None
    assert rows["i-2"].status == "pending"
    assert rows["i-9"].status == "pending", "another thread's rows are left alone"

    assert await deadlines.claim_timeout(db, rows["i-2"].id or 0, datetime(2026, 3, 6, tzinfo=UTC))
    await track(db, settings, THREAD, [])
    assert {r.interrupt_id: r.status for r in await all_rows(db)}["i-2"] == "timed_out"


async def test_no_row_without_a_deadline(db: Database, settings: Settings) -> None:
    unknown = {"kind": "nope", "deadline": "2026-03-04T11:00:00+00:00"}
    assert await track(db, settings, THREAD, [("i-1", approval(None)), ("i-2", unknown)]) == []
    assert await all_rows(db) == []


async def test_a_reminder_point_and_a_timeout_are_claimed_once(db: Database, settings: Settings) -> None:
    [row] = await track(db, settings, THREAD, [("i-1", approval("2026-03-04T11:00:00+00:00"))])
    assert row.id is not None
    points = [3600, 600]
    assert deadlines.due_reminders(row, points, datetime(2026, 3, 4, 9, 59, tzinfo=UTC)) == []
    due = deadlines.due_reminders(row, points, datetime(2026, 3, 4, 10, 55, tzinfo=UTC))
    assert due == [3600, 600], "points that came together are due together"

    async def claim() -> bool:
        async with db.session() as s:
            return await deadlines.claim_reminder(s, row, due)

    assert await asyncio.gather(claim(), claim()) in ([True, False], [False, True])
    [after] = await all_rows(db)
    assert after.reminders_sent == [3600, 600]
    assert deadlines.due_reminders(after, points, datetime(2026, 3, 4, 10, 59, tzinfo=UTC)) == []
    assert deadlines.due_reminders(after, [60], datetime(2026, 3, 4, 11, 0, tzinfo=UTC)) == [], "none once passed"

    early = datetime(2026, 3, 4, 10, 59, tzinfo=UTC)
    assert not await deadlines.claim_timeout(db, row.id, early), "not before the deadline"
    late = datetime(2026, 3, 4, 11, 0, 1, tzinfo=UTC)
    won = await asyncio.gather(*(deadlines.claim_timeout(db, row.id, late) for _ in range(3)))
    assert sorted(won) == [False, False, True]
    await deadlines.release(db, row.id)
    assert (await all_rows(db))[0].status == "pending"


def test_the_notice_says_what_was_asked_when_and_what_was_done() -> None:
    row = InterruptDeadline(
        thread_id=THREAD,
        interrupt_id="i-1",
        kind="deploy_approval",
        deadline_at=datetime(2026, 3, 5, 10, tzinfo=UTC),
        default_answer={"kind": "reject", "text": "no answer within 24 h"},
        created_at=T0,
    )
    text = deadlines.notice_text(row, {"project": "hello-api"}, by="system:deadline")
    assert text == (
        "The deploy approval of hello-api asked at 2026-03-04 10:00:00 UTC had no answer by its deadline "
        "(2026-03-05 10:00:00 UTC); it was rejected by system:deadline (no answer within 24 h)."
    )
