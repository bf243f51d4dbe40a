"""Cancelling a project on a real SQLite file: the request on the record, and how the project is left afterwards."""

from __future__ import annotations

import pytest
from sqlmodel import select

from core.db import Database
from core.settings import Settings
from models.enums import DeploymentStatus, ProjectStatus
from models.tables import Deployment, Event, PortLease, Project, Server
from services.cancel import CancelRefused, cancel_request, request_cancel, settle
from services.leases import ensure_default_server, lease_port


async def leased_project(db: Database, settings: Settings, status: ProjectStatus, name: str = "p") -> tuple[int, int]:
    """A project in ``status`` holding a port on the default server: ``(project id, port)``."""
    await ensure_default_server(db, settings)
    async with db.session() as s:
        project = Project(name=name, status=status, thread_id=f"t-{name}")
        s.add(project)
        await s.flush()
        server = (await s.exec(select(Server))).one()
    assert project.id is not None
    port = await lease_port(db, project_id=project.id, server=server)
    assert port is not None
    return project.id, port


async def deployments(db: Database, pid: int, port: int, *statuses: DeploymentStatus) -> None:
    """Deployments of the project in this order (commit ``000...``, ``111...``...) on the default server."""
    async with db.session() as s:
        server = (await s.exec(select(Server))).one()
        assert server.id is not None
        for i, status in enumerate(statuses):
            row = Deployment(
                project_id=pid,
                commit_sha=f"{i}" * 40,
                server_id=server.id,
                port=port,
                status=status,
                idempotency_key=f"k{i}",
            )
            s.add(row)


async def events(db: Database, project_id: int) -> list[Event]:
    async with db.session() as s:
        query = select(Event).where(Event.subject_type == "project", Event.subject_id == project_id)
        return list((await s.exec(query)).all())


async def test_a_request_is_on_the_record_and_the_first_asker_stays(db: Database, settings: Settings) -> None:
    pid, _ = await leased_project(db, settings, ProjectStatus.implementing)
    assert await cancel_request(db, pid) is None

    project = await request_cancel(db, "p", actor="api:alice", reason="  not   needed\nany more ")
    again = await request_cancel(db, "p", actor="api:bob", reason="me too")

    assert project.cancel_requested_by == again.cancel_requested_by == "api:alice"
    assert await cancel_request(db, pid) == ("api:alice", "not needed any more")
    [asked] = [e for e in await events(db, pid) if e.to_status == "cancel_requested"]
    assert asked.actor == "api:alice" and asked.reason == "implementing: not needed any more"
    assert asked.thread_id == "t-p"


@pytest.mark.parametrize("status", [ProjectStatus.active, ProjectStatus.deploying, ProjectStatus.discovered])
async def test_nothing_in_flight_is_refused_and_nothing_changes(
    db: Database, settings: Settings, status: ProjectStatus
) -> None:
    pid, _ = await leased_project(db, settings, status)
    with pytest.raises(CancelRefused, match=f"p is {status.value}"):
        await request_cancel(db, "p", actor="cli:root", reason="x")
    with pytest.raises(LookupError, match="unknown project 'nope'"):
        await request_cancel(db, "nope", actor="cli:root", reason="x")
    assert await cancel_request(db, pid) is None
    assert await events(db, pid) == []


async def test_work_never_deployed_ends_cancelled_with_its_port_released(db: Database, settings: Settings) -> None:
    pid, port = await leased_project(db, settings, ProjectStatus.verifying)
    await request_cancel(db, "p", actor="cli:root", reason="wrong idea")

    assert await settle(db, pid, actor="cli:root", reason="wrong idea", thread_id="t-p") == ProjectStatus.cancelled
    assert await settle(db, pid, actor="cli:root", reason="again") is None  # a re-run changes nothing

    async with db.session() as s:
        project = await s.get(Project, pid)
        leases = (await s.exec(select(PortLease))).all()
    assert project is not None and project.status == ProjectStatus.cancelled
    assert (project.port, project.server_id, project.cancel_requested_by) == (None, None, None)
    assert leases == []
    trail = [(e.from_status, e.to_status, e.actor) for e in await events(db, pid)]
    assert ("verifying", "cancelled", "cli:root") in trail
    assert (None, "lease_released", "cli:root") in trail
    [released] = [e for e in await events(db, pid) if e.to_status == "lease_released"]
    assert f"port {port}" in released.reason


async def test_a_cancelled_update_of_a_live_release_goes_back_to_active_and_keeps_its_port(
    db: Database, settings: Settings
) -> None:
    pid, port = await leased_project(db, settings, ProjectStatus.implementing)
    await deployments(db, pid, port, DeploymentStatus.failed, DeploymentStatus.succeeded)

    assert await settle(db, pid, actor="api:alice", reason="keep what runs") == ProjectStatus.active

    async with db.session() as s:
        project = await s.get(Project, pid)
        [lease] = (await s.exec(select(PortLease))).all()
    assert project is not None and project.status == ProjectStatus.active and project.port == port
    assert lease.port == port
    [moved] = [e for e in await events(db, pid) if e.to_status == "active"]
    assert moved.actor == "api:alice" and "1111111111) keeps running" in moved.reason


async def test_a_last_deploy_that_failed_is_not_live(db: Database, settings: Settings) -> None:
    pid, port = await leased_project(db, settings, ProjectStatus.maintenance)
    await deployments(db, pid, port, DeploymentStatus.succeeded, DeploymentStatus.failed)
    assert await settle(db, pid, actor="cli:root", reason="x") == ProjectStatus.cancelled
