"""Read-only data access for the API: keyword-only functions over an open session."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.tables import Project, Server


async def list_projects(*, session: AsyncSession) -> list[tuple[Project, Server | None]]:
    """Every project by name, each with its server (None when it has none)."""
    stmt = select(Project, Server).join(Server, isouter=True).order_by(col(Project.name))
    return [(project, server) for project, server in (await session.exec(stmt)).all()]


async def get_project(*, session: AsyncSession, name: str) -> tuple[Project, Server | None] | None:
    """The project called ``name`` with its server, or None if there is no such project."""
    stmt = select(Project, Server).join(Server, isouter=True).where(Project.name == name)
    row = (await session.exec(stmt)).first()
    return (row[0], row[1]) if row else None


async def list_servers(*, session: AsyncSession) -> Sequence[Server]:
    """Every server by name."""
    return (await session.exec(select(Server).order_by(col(Server.name)))).all()
