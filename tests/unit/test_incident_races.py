"""Incidents under concurrent writers: one open incident per subject, each told to the person once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlmodel import select

from core.db import Database
from models.tables import Incident
from services import incidents
from services.incidents import open_incident, resolve_incident, take_unsurfaced


async def _open(db: Database, message: str) -> None:
    async with db.session() as s:
        await open_incident(
            s, kind="server_down", severity="critical", subject_type="server", subject_id=7, message=message
        )


async def test_concurrent_writers_open_one_incident_and_the_last_message_wins(db: Database) -> None:
    await asyncio.gather(*(_open(db, f"down #{i}") for i in range(8)))

    async with db.session() as s:
        rows = (await s.exec(select(Incident))).all()
    assert len(rows) == 1 and rows[0].message.startswith("down #")

    async with db.session() as s:
        assert await resolve_incident(s, kind="server_down", subject_type="server", subject_id=7)
    await _open(db, "down again")  # a resolved incident does not block a new one
    async with db.session() as s:
        rows = (await s.exec(select(Incident).order_by(Incident.id))).all()  # type: ignore[arg-type]
    assert [(r.message, r.resolved_at is None) for r in rows][1] == ("down again", True) and len(rows) == 2


async def test_two_turns_taking_unsurfaced_incidents_never_both_get_one(db: Database) -> None:
    for subject in range(20):
        async with db.session() as s:
            await open_incident(
                s, kind="repo_missing", severity="critical", subject_type="project", subject_id=subject, message="x"
            )

    async def take() -> list[int]:
        async with db.session() as s:
            return [i.id for i in await take_unsurfaced(s) if i.id is not None]

    first, second = await asyncio.gather(take(), take())
    assert sorted(first + second) == sorted(set(first + second)) and len(first + second) == 20
    async with db.session() as s:
        assert await take_unsurfaced(s) == []
        assert all(i.surfaced_at is not None for i in (await s.exec(select(Incident))).all())


async def test_a_writer_that_read_before_another_opened_refreshes_instead_of_duplicating(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _open(db, "first writer")
    real = incidents.find_open
    calls = 0

    async def stale_then_real(session: Any, **kw: Any) -> Incident | None:
        nonlocal calls
        calls += 1
        return None if calls == 1 else await real(session, **kw)  # the first read predates the other writer

    monkeypatch.setattr(incidents, "find_open", stale_then_real)
    await _open(db, "second writer")

    async with db.session() as s:
        rows = (await s.exec(select(Incident))).all()
    assert [(r.message, r.resolved_at) for r in rows] == [("second writer", None)]
