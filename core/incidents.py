"""Open, resolve and surface incidents: what went wrong in reality, told to the person on their next turn."""

from __future__ import annotations

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.tables import Incident, utcnow


async def open_incident(
    session: AsyncSession, *, kind: str, severity: str, subject_type: str, subject_id: int, message: str
) -> Incident:
    """Open an incident, or refresh the message of the one already open for the same kind and subject."""
    existing = await find_open(session, kind=kind, subject_type=subject_type, subject_id=subject_id)
    if existing is not None:
        existing.message = message
        session.add(existing)
        return existing
    incident = Incident(kind=kind, severity=severity, subject_type=subject_type, subject_id=subject_id, message=message)
    session.add(incident)
    await session.flush()
    return incident


async def find_open(session: AsyncSession, *, kind: str, subject_type: str, subject_id: int) -> Incident | None:
    """The open incident of that kind for that subject, if any."""
    stmt = select(Incident).where(
        Incident.kind == kind,
        Incident.subject_type == subject_type,
        Incident.subject_id == subject_id,
        col(Incident.resolved_at).is_(None),
    )
    return (await session.exec(stmt)).first()


async def resolve_incident(session: AsyncSession, *, kind: str, subject_type: str, subject_id: int) -> bool:
    """Resolve the open incident of that kind for that subject; return whether there was one."""
    incident = await find_open(session, kind=kind, subject_type=subject_type, subject_id=subject_id)
    if incident is None:
        return False
    incident.resolved_at = utcnow()
    session.add(incident)
    return True


async def take_unsurfaced(session: AsyncSession) -> list[Incident]:
    """Incidents not yet told to the person (open ones, and resolved ones they never heard of), marked surfaced."""
    rows = list((await session.exec(select(Incident).where(col(Incident.surfaced_at).is_(None)))).all())
    now = utcnow()
    for incident in rows:
        incident.surfaced_at = now
        session.add(incident)
    return rows
