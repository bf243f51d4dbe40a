"""Read-only data access for the API: keyword-only functions over an open session."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.tables import Deployment, Event, Incident, Project, Server
from services.live import live_deployment

ProjectRow = tuple[Project, Server | None, Deployment | None]
"""A project, its server and its live deployment (each None when it has none)."""


async def list_projects(*, session: AsyncSession) -> list[ProjectRow]:
    """Every project by name, each with its server and live deployment."""
    stmt = select(Project, Server).join(Server, isouter=True).order_by(col(Project.name))
    rows = (await session.exec(stmt)).all()
    return [(project, server, await live_deployment(session, project.id or 0)) for project, server in rows]


async def get_project(*, session: AsyncSession, name: str) -> ProjectRow | None:
    """The project called ``name`` with its server and live deployment, or None if there is no such project."""
    stmt = select(Project, Server).join(Server, isouter=True).where(Project.name == name)
    row = (await session.exec(stmt)).first()
    if row is None:
        return None
    return row[0], row[1], await live_deployment(session, row[0].id or 0)


async def list_incidents(*, session: AsyncSession, open_only: bool, limit: int) -> Sequence[Incident]:
    """Incidents, newest first; only the unresolved ones if ``open_only``."""
    stmt = select(Incident).order_by(col(Incident.id).desc()).limit(limit)
    if open_only:
        stmt = stmt.where(col(Incident.resolved_at).is_(None))
    return (await session.exec(stmt)).all()


async def list_events(
    *, session: AsyncSession, subject_type: str | None, subject_id: int | None, before: int | None, limit: int
) -> Sequence[Event]:
    """The audit trail, newest first, optionally of one subject; ``before`` pages back (events with smaller ids)."""
    stmt = select(Event).order_by(col(Event.id).desc()).limit(limit)
    if subject_type is not None:
        stmt = stmt.where(Event.subject_type == subject_type)
    if subject_id is not None:
        stmt = stmt.where(Event.subject_id == subject_id)
    if before is not None:
        stmt = stmt.where(col(Event.id) < before)
    return (await session.exec(stmt)).all()


async def list_servers(*, session: AsyncSession) -> Sequence[Server]:
    """Every server by name."""
    return (await session.exec(select(Server).order_by(col(Server.name)))).all()
