"""The transition table is the only way a status changes: compare-and-set plus exactly one audit Event."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from sqlmodel import select

from core.db import Database
from models.enums import ProjectStatus as P
from models.enums import ServerStatus as S
from models.tables import Event, Project, Server
from models.transitions import (
    PROJECT_TRANSITIONS,
    SERVER_TRANSITIONS,
    IllegalTransition,
    StaleStatus,
    enter_project_status,
    last_project_event,
    project_move_allowed,
    transition_project,
    transition_server,
)


async def make_project(db: Database, status: P, name: str = "demo-app") -> int:
    async with db.session() as s:
        project = Project(name=name, status=status)
        s.add(project)
        await s.flush()
        assert project.id is not None
        return project.id


async def make_server(db: Database, status: S) -> int:
    async with db.session() as s:
        server = Server(name="box", address="10.0.0.5", status=status)
        s.add(server)
        await s.flush()
        assert server.id is not None
        return server.id


async def status_and_events(db: Database, subject: str, subject_id: int) -> tuple[str, list[Event]]:
    table = Project if subject == "project" else Server
    async with db.session() as s:
        row = await s.get(table, subject_id)
        assert row is not None
        events = (
            await s.exec(select(Event).where(Event.subject_type == subject, Event.subject_id == subject_id))
        ).all()
    return row.status, list(events)


def test_tables_cover_every_status() -> None:
    assert set(PROJECT_TRANSITIONS) == set(P)
    assert set(SERVER_TRANSITIONS) == set(S)


@pytest.mark.parametrize(("frm", "to"), list(itertools.product(P, P)), ids=lambda s: s.value)
async def test_project_move_follows_table(db: Database, frm: P, to: P) -> None:
    pid = await make_project(db, frm)
    if project_move_allowed(frm, to):
        async with db.session() as s:
            before = await transition_project(s, pid, to, reason="because", thread_id="t-1", idempotent=False)
        assert before == frm
        status, events = await status_and_events(db, "project", pid)
        assert status == to
        assert [(e.from_status, e.to_status, e.reason, e.thread_id) for e in events] == [
            (frm.value, to.value, "because", "t-1")
        ]
    else:
        with pytest.raises(IllegalTransition) as err:
            async with db.session() as s:
                await transition_project(s, pid, to, reason="because", idempotent=False)
        assert repr(frm.value) in str(err.value) and repr(to.value) in str(err.value)
        status, events = await status_and_events(db, "project", pid)
        assert status == frm
        assert events == []


@pytest.mark.parametrize("status", list(P), ids=lambda s: s.value)
async def test_same_status_is_idempotent_without_event(db: Database, status: P) -> None:
    pid = await make_project(db, status)
    async with db.session() as s:
        assert await transition_project(s, pid, status, reason="again") == status
    assert await status_and_events(db, "project", pid) == (status, [])


@pytest.mark.parametrize("status", list(P), ids=lambda s: s.value)
def test_missing_is_reachable_from_every_status_but_archived(status: P) -> None:
    assert project_move_allowed(status, P.missing) == (status != P.archived)  # nothing leaves an archived project


async def test_unknown_project_is_lookup_error(db: Database) -> None:
    with pytest.raises(LookupError, match="project 999"):
        async with db.session() as s:
            await transition_project(s, 999, P.estimated, reason="x")


async def test_illegal_move_in_a_batch_rolls_back_nothing_else_written(db: Database) -> None:
    pid = await make_project(db, P.draft)
    with pytest.raises(IllegalTransition):
        async with db.session() as s:
            await transition_project(s, pid, P.estimated, reason="ok")
            await transition_project(s, pid, P.active, reason="not ok")
    assert await status_and_events(db, "project", pid) == (P.draft, [])


@pytest.mark.parametrize(
    ("targets", "idempotent"),
    [((P.initialized, P.estimated), True), ((P.initialized, P.initialized), False)],
    ids=["different-targets", "same-target-strict"],
)
async def test_concurrent_movers_exactly_one_wins(db: Database, targets: tuple[P, P], idempotent: bool) -> None:
    pid = await make_project(db, P.provisioning)

    async def mover(to: P) -> P:
        async with db.session() as s:
            return await transition_project(s, pid, to, reason=f"to {to}", idempotent=idempotent)

    results = await asyncio.gather(*(mover(t) for t in targets), return_exceptions=True)
    wins = [r for r in results if not isinstance(r, BaseException)]
    losses = [r for r in results if isinstance(r, BaseException)]
    assert wins == [P.provisioning], results
    assert len(losses) == 1 and isinstance(losses[0], StaleStatus | IllegalTransition), results
    status, events = await status_and_events(db, "project", pid)
    assert len(events) == 1
    assert status == events[0].to_status and events[0].from_status == "provisioning"


async def test_server_allowed_move_writes_one_event(db: Database) -> None:
    sid = await make_server(db, S.discovered)
    async with db.session() as s:
        assert await transition_server(s, sid, S.ready, reason="probe ok", thread_id="t-9") == S.discovered
    status, events = await status_and_events(db, "server", sid)
    assert status == S.ready
    assert [(e.from_status, e.to_status, e.reason, e.thread_id) for e in events] == [
        ("discovered", "ready", "probe ok", "t-9")
    ]


@pytest.mark.parametrize(("frm", "to"), [(S.ready, S.provisioning), (S.provisioning, S.discovered)])
async def test_server_illegal_move_writes_nothing(db: Database, frm: S, to: S) -> None:
    sid = await make_server(db, frm)
    with pytest.raises(IllegalTransition) as err:
        async with db.session() as s:
            await transition_server(s, sid, to, reason="x")
    assert repr(frm.value) in str(err.value) and repr(to.value) in str(err.value)
    assert await status_and_events(db, "server", sid) == (frm, [])


async def test_server_same_status_and_unknown(db: Database) -> None:
    sid = await make_server(db, S.error)
    async with db.session() as s:
        assert await transition_server(s, sid, S.error, reason="again") == S.error
    assert await status_and_events(db, "server", sid) == (S.error, [])
    with pytest.raises(LookupError, match="server 404"):
        async with db.session() as s:
            await transition_server(s, 404, S.ready, reason="x")


async def test_concurrent_server_movers_one_event(db: Database) -> None:
    sid = await make_server(db, S.provisioning)

    async def mover() -> S:
        async with db.session() as s:
            return await transition_server(s, sid, S.ready, reason="probe ok")

    results = await asyncio.gather(mover(), mover(), return_exceptions=True)
    # The winner saw provisioning; the loser either lost the compare-and-set or saw ready (a no-op).
    assert sorted(map(str, results)).count("provisioning") == 1, results
    assert all(r == S.ready or isinstance(r, StaleStatus) for r in results if r != S.provisioning), results
    status, events = await status_and_events(db, "server", sid)
    assert status == S.ready
    assert [(e.from_status, e.to_status) for e in events] == [("provisioning", "ready")]


async def move(db: Database, pid: int, to: P, thread_id: str) -> None:
    async with db.session() as s:
        await transition_project(s, pid, to, reason=f"to {to}", thread_id=thread_id)


async def enter(db: Database, pid: int, thread_id: str = "t-1") -> P | None:
    async with db.session() as s:
        return await enter_project_status(
            s, pid, P.implementing, finished={P.implemented}, reason="developer", thread_id=thread_id
        )


@pytest.mark.parametrize("frm", [P.designed, P.verifying], ids=lambda s: s.value)
async def test_enter_from_an_entry_status_moves_with_one_event(db: Database, frm: P) -> None:
    pid = await make_project(db, frm)
    assert await enter(db, pid) is None
    status, events = await status_and_events(db, "project", pid)
    assert status == P.implementing
    assert [(e.from_status, e.to_status, e.thread_id) for e in events] == [(frm.value, "implementing", "t-1")]


async def test_enter_again_mid_node_writes_nothing(db: Database) -> None:
    pid = await make_project(db, P.designed)
    assert await enter(db, pid) is None
    assert await enter(db, pid) is None
    status, events = await status_and_events(db, "project", pid)
    assert status == P.implementing and len(events) == 1


async def test_enter_after_the_node_finished_in_this_thread_writes_nothing(db: Database) -> None:
    pid = await make_project(db, P.designed)
    assert await enter(db, pid) is None
    await move(db, pid, P.implemented, "t-1")
    assert await enter(db, pid) == P.implemented
    status, events = await status_and_events(db, "project", pid)
    assert status == P.implemented
    assert [(e.from_status, e.to_status) for e in events] == [
        ("designed", "implementing"),
        ("implementing", "implemented"),
    ]
    async with db.session() as s:
        last = await last_project_event(s, pid)
    assert last is not None and last.to_status == "implemented"


async def test_enter_a_finished_status_another_thread_reached_still_raises(db: Database) -> None:
    pid = await make_project(db, P.designed)
    await move(db, pid, P.implementing, "t-other")
    await move(db, pid, P.implemented, "t-other")
    with pytest.raises(IllegalTransition, match="'implemented' to 'implementing'"):
        await enter(db, pid, thread_id="t-1")
    status, events = await status_and_events(db, "project", pid)
    assert status == P.implemented and len(events) == 2


async def test_enter_a_finished_status_without_its_event_still_raises(db: Database) -> None:
    pid = await make_project(db, P.implemented)  # no Event says who moved it there
    with pytest.raises(IllegalTransition):
        await enter(db, pid)
    assert await status_and_events(db, "project", pid) == (P.implemented, [])


@pytest.mark.parametrize("frm", [P.active, P.draft, P.initialized], ids=lambda s: s.value)
async def test_enter_from_elsewhere_follows_the_table(db: Database, frm: P) -> None:
    pid = await make_project(db, frm)
    with pytest.raises(IllegalTransition):
        await enter(db, pid)
    assert await status_and_events(db, "project", pid) == (frm, [])


async def test_enter_unknown_project_is_lookup_error(db: Database) -> None:
    with pytest.raises(LookupError, match="project 999"):
        await enter(db, 999)
