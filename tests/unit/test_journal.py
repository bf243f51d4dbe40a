"""The domain event journal: the gap rule, what appends to it (trail rows, notifications, sync passes), retention.

Real SQLite files (the ``db`` fixture); the gap rule is pure logic, fed the rows a read would return.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi import HTTPException
from sqlmodel import col, select

from api.routes_events import last_event_id, wants_stream
from core.db import Database
from models.tables import Event
from models.time_tables import DomainEvent
from services.identities import record
from services.journal import GapGuard, journal_pass, prune, read_after
from services.notifications import DEPLOY_SUCCEEDED, enqueue

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def row(row_id: int, *, age_s: float = 0.0) -> DomainEvent:
    return DomainEvent(id=row_id, kind="audit", data={}, created_at=NOW - timedelta(seconds=age_s))


def ids(rows: list[DomainEvent]) -> list[int]:
    return [r.id or 0 for r in rows]


def test_rows_without_holes_go_out_at_once_and_the_cursor_follows() -> None:
    guard = GapGuard(cursor=3)
    assert ids(guard.release([row(5), row(4), row(3)], now=0.0, wall=NOW)) == [4, 5], "in id order, 3 already had"
    assert guard.cursor == 5
    assert guard.release([], now=1.0, wall=NOW) == []


def test_a_hole_holds_back_what_is_above_it_until_it_fills() -> None:
    guard = GapGuard(cursor=0, grace_s=10)
    assert ids(guard.release([row(1), row(3)], now=0.0, wall=NOW)) == [1], "2 may still commit"
    assert guard.cursor == 1
    assert guard.release([row(3)], now=9.9, wall=NOW) == [], "still within the grace"
    assert ids(guard.release([row(2), row(3)], now=9.95, wall=NOW)) == [2, 3], "2 committed late: nothing lost"
    assert guard.skipped == 0


def test_a_hole_that_never_fills_is_given_up_after_the_grace_counted_from_when_it_was_seen() -> None:
    guard = GapGuard(cursor=0, grace_s=10)
    assert ids(guard.release([row(1), row(4)], now=100.0, wall=NOW)) == [1]
    assert ids(guard.release([row(4), row(5)], now=109.0, wall=NOW)) == []
    assert ids(guard.release([row(4), row(5), row(7)], now=110.0, wall=NOW)) == [4, 5], "2 and 3 given up"
    assert guard.skipped == 2
    # 6 was first seen missing (below 7) at 110: its own grace, not the older hole's
    assert guard.release([row(7)], now=119.0, wall=NOW) == []
    assert ids(guard.release([row(6), row(7)], now=119.5, wall=NOW)) == [6, 7]
    assert guard.skipped == 2


def test_a_hole_below_an_old_row_is_not_waited_for() -> None:
    guard = GapGuard(cursor=10, grace_s=10, stale_s=60)
    assert ids(guard.release([row(40, age_s=3600), row(41, age_s=3599)], now=0.0, wall=NOW)) == [40, 41]
    assert guard.skipped == 29, "ids 11..39 were pruned long ago: a resume from an old id does not stall"


def test_accept_picks_the_stream_only_when_it_is_asked_for() -> None:
    assert wants_stream("text/event-stream")
    assert wants_stream("text/event-stream, application/json;q=0.5")
    assert not wants_stream(None)
    assert not wants_stream("*/*")
    assert not wants_stream("application/json")
    assert not wants_stream("application/json, text/event-stream;q=0.5")
    assert not wants_stream("text/event-stream;q=0")
    assert not wants_stream("text/event-stream;q=bad")


def test_last_event_id_is_a_journal_id_or_a_422() -> None:
    assert last_event_id(None) is None and last_event_id(" ") is None
    assert last_event_id(" 42 ") == 42 and last_event_id(str(2**63 - 1)) == 2**63 - 1
    for bad in ("seven", "-1", "4.0", "١٢", str(2**63)):
        with pytest.raises(HTTPException) as refused:
            last_event_id(bad)
        assert refused.value.status_code == 422, bad


async def journal(db: Database) -> list[DomainEvent]:
    async with db.session() as s:
        return await read_after(s, 0)


async def test_every_trail_row_is_journaled_in_its_own_transaction(db: Database) -> None:
    async with db.session() as s:
        await record(s, subject_type="token", subject_id=7, action="token_created", reason="r", actor="cli:x")
    async with db.session() as s:
        event = (await s.exec(select(Event))).one()
    [entry] = await journal(db)
    assert entry.kind == "audit" and (entry.subject_type, entry.subject_id, entry.actor) == ("token", 7, "cli:x")
    assert entry.data == {"event_id": event.id, "from_status": None, "to_status": "token_created", "reason": "r"}

    with pytest.raises(RuntimeError):
        async with db.session() as s:
            await record(s, subject_type="token", subject_id=8, action="token_revoked", reason="r", actor="cli:x")
            await s.flush()
            raise RuntimeError("rolled back")
    async with db.session() as s:
        trail = (await s.exec(select(Event).where(col(Event.subject_id) == 8))).all()
    assert trail == [] and len(await journal(db)) == 1, "a rolled-back change leaves neither row"


async def test_a_notification_is_journaled_with_no_webhook_subscribed(db: Database) -> None:
    data = {"deployment_id": 4, "project_id": 2, "status": "succeeded", "at": NOW}
    async with db.session() as s:
        assert await enqueue(s, DEPLOY_SUCCEEDED, data) == 0, "no webhook: no delivery"
    [entry] = await journal(db)
    assert (entry.kind, entry.subject_type, entry.subject_id) == (DEPLOY_SUCCEEDED, "deployment", 4)
    assert entry.data["at"] == str(NOW), "a value JSON cannot hold is stored as its text, never a failed write"


async def test_a_sync_pass_is_journaled_and_old_rows_pruned_but_never_the_newest(db: Database) -> None:
    await journal_pass(db, {"worker": "server_sync", "updated": 2, "errors": []}, retention_days=30)
    [entry] = await journal(db)
    assert entry.kind == "sync.pass" and entry.actor == "system:server_sync"
    assert entry.data["worker"] == "server_sync" and entry.data["updated"] == 2 and entry.data["ok"] is True

    async with db.session() as s:
        for age in (40, 31, 29):
            s.add(DomainEvent(kind="audit", data={"age": age}, created_at=utcnow_minus(days=age)))
        s.add(DomainEvent(kind="audit", data={"age": 50}, created_at=utcnow_minus(days=50)))
    assert await prune(db, older_than_days=30) == 2, "40 and 31 days old; the 50-day-old row is the newest"
    assert [r.data.get("age") for r in await journal(db)] == [None, 29, 50]


def utcnow_minus(*, days: int) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)
