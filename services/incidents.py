"""Open, resolve and surface incidents: what went wrong in reality, told to the person on their next turn."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.tables import Incident, utcnow
from services.notifications import incident_event


async def open_incident(
    session: AsyncSession, *, kind: str, severity: str, subject_type: str, subject_id: int, message: str
) -> Incident:
    """Open an incident, or refresh the message of the one already open for the same kind and subject.

    The partial unique index ``uq_incident_open`` allows one open incident per ``(kind, subject)``: when another
    writer opened it first, the insert (in a savepoint) fails and that incident is refreshed instead.
    """
    existing = await find_open(session, kind=kind, subject_type=subject_type, subject_id=subject_id)
    if existing is None:
        incident = Incident(
            kind=kind, severity=severity, subject_type=subject_type, subject_id=subject_id, message=message
        )
        try:
            async with session.begin_nested():
                session.add(incident)
            await incident_event(session, incident, opened=True)
            return incident
        except IntegrityError:
            existing = await find_open(session, kind=kind, subject_type=subject_type, subject_id=subject_id)
            if existing is None:
                raise
    existing.message = message
    session.add(existing)
    return existing


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
    await incident_event(session, incident, opened=False)
    return True


async def take_unsurfaced(session: AsyncSession) -> list[Incident]:
    """Incidents not yet told to the person (open ones, and resolved ones they never heard of), marked surfaced.

    One ``UPDATE ... RETURNING``: two turns starting at once never both tell the same incident.
    """
    conn = await session.connection()
    taken = (
        update(Incident)
        .where(col(Incident.surfaced_at).is_(None))
        .values(surfaced_at=utcnow())
        .returning(col(Incident.id))
    )
    ids = list((await conn.execute(taken)).scalars())
    if not ids:
        return []
    chosen = select(Incident).where(col(Incident.id).in_(ids)).order_by(col(Incident.id))
    rows = await session.exec(chosen.execution_options(populate_existing=True))
    return list(rows.all())
