"""The one way a project or server changes status: an allowed-transition table and an audit Event.

The change is a compare-and-set ``UPDATE ... WHERE status = :from`` in the same transaction as the Event insert,
so two writers cannot both move the same project and no change is ever written without its Event.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.enums import ProjectStatus as P
from models.enums import ServerStatus as S
from models.tables import Event, Project, Server, utcnow

PROJECT_TRANSITIONS: dict[P, frozenset[P]] = {
    P.discovered: frozenset({P.initialized, P.maintenance}),
    P.draft: frozenset({P.estimated, P.cancelled}),
    P.estimated: frozenset({P.provisioning, P.cancelled}),
    P.provisioning: frozenset({P.initialized, P.estimated, P.cancelled}),
    P.initialized: frozenset({P.designing, P.cancelled}),
    P.designing: frozenset({P.designed, P.cancelled, P.active}),
    P.designed: frozenset({P.implementing, P.cancelled, P.active}),
    P.implementing: frozenset({P.implemented, P.cancelled, P.active}),
    P.implemented: frozenset({P.verifying, P.cancelled, P.active}),
    P.verifying: frozenset({P.verified, P.implementing, P.cancelled, P.active}),
    P.verified: frozenset({P.deploying, P.implementing, P.designing, P.cancelled, P.active, P.undeployed}),
    P.deploying: frozenset({P.active, P.verified}),
    P.active: frozenset({P.maintenance, P.deploying, P.stopped, P.undeployed}),
    P.maintenance: frozenset({P.designing, P.cancelled, P.active}),
    P.cancelled: frozenset({P.designing, P.undeployed}),
    P.stopped: frozenset({P.active, P.undeployed}),
    P.undeployed: frozenset({P.designing, P.archived}),
    P.archived: frozenset(),
    P.missing: frozenset({P.discovered, P.initialized}),
}
"""Allowed project moves. Any status may also move to ``missing`` (a confirmed 404 of its repository).

Work in flight may be cancelled (``services/cancel.py``): to ``cancelled`` when nothing of the project was ever
deployed, or back to ``active`` when an update is cancelled and its live release keeps running (the cancel checks
that a succeeded deployment exists before it makes that move). An update starts a cancelled project again.

The end of a project's life (``services/lifecycle.py``): ``active <-> stopped``, then ``undeployed`` (service
stopped, port released; an update starts it again) and ``archived`` (deleted: nothing leaves it).
"""

SERVER_TRANSITIONS: dict[S, frozenset[S]] = {
    S.discovered: frozenset({S.provisioning, S.ready, S.error}),
    S.provisioning: frozenset({S.ready, S.error}),
    S.ready: frozenset({S.error}),
    S.error: frozenset({S.ready, S.provisioning}),
}


class IllegalTransition(ValueError):
    """A status change the table does not allow; nothing was written."""


class StaleStatus(RuntimeError):
    """The subject's status changed under us between read and write; nothing was written."""


def project_move_allowed(frm: P, to: P) -> bool:
    """Whether ``frm -> to`` is in the project table (``-> missing`` is allowed from anything but ``archived``)."""
    return (to == P.missing and frm != P.archived) or to in PROJECT_TRANSITIONS.get(frm, frozenset())


async def transition_project(
    session: AsyncSession,
    project_id: int,
    to: P,
    *,
    reason: str,
    thread_id: str | None = None,
    actor: str | None = None,
    idempotent: bool = True,
) -> P:
    """Move a project to ``to`` and record an Event, in the caller's transaction.

    Args:
        session: the open session (committed by the caller).
        project_id: the project's primary key.
        to: the target status.
        reason: why, in words a person reads in the audit trail.
        thread_id: the graph thread making the change, if any.
        actor: who made it (``Event.actor``): an API identity, ``cli:<user>`` or ``system:<worker>``.
        idempotent: if the project is already in ``to``, return without writing (a node re-run after a crash
            or a resume must not fail on the move it already made).

    Returns:
        The status the project had before.

    Raises:
        LookupError: no such project.
        IllegalTransition: the table does not allow the move.
        StaleStatus: a concurrent writer moved the project first.
    """
    current = (await session.exec(select(Project.status).where(Project.id == project_id))).first()
    if current is None:
        raise LookupError(f"project {project_id} does not exist")
    frm = P(current)
    if frm == to and idempotent:
        return frm
    if not project_move_allowed(frm, to):
        allowed = ", ".join(sorted(PROJECT_TRANSITIONS.get(frm, frozenset()))) or "nothing"
        raise IllegalTransition(
            f"project {project_id} cannot move from {frm.value!r} to {to.value!r} "
            f"(from {frm.value!r} it may move to: {allowed}, or missing)"
        )
    stmt = (
        update(Project)
        .where(Project.id == project_id, Project.status == frm)  # type: ignore[arg-type]
        .values(status=to, updated_at=utcnow())
    )
    result = await session.exec(stmt)  # type: ignore[call-overload]
    if result.rowcount != 1:
        raise StaleStatus(f"project {project_id} changed status concurrently; re-read and retry")
    session.add(
        Event(
            subject_type="project",
            subject_id=project_id,
            from_status=frm.value,
            to_status=to.value,
            reason=reason,
            thread_id=thread_id,
            actor=actor,
        )
    )
    return frm


async def last_project_event(session: AsyncSession, project_id: int) -> Event | None:
    """The project's most recent audit Event (the one that moved it to its current status), or None."""
    stmt = (
        select(Event)
        .where(Event.subject_type == "project", Event.subject_id == project_id)
        .order_by(col(Event.id).desc())
        .limit(1)
    )
    return (await session.exec(stmt)).first()


async def enter_project_status(
    session: AsyncSession,
    project_id: int,
    working: P,
    *,
    finished: Collection[P],
    reason: str,
    thread_id: str,
    actor: str | None = None,
) -> P | None:
    """A graph node's first move: to its ``working`` status, re-entrant for the node's own thread.

    LangGraph runs a node again from its start when the process died after the node's effects were committed
    but before its step's checkpoint was saved. So: already in ``working`` (it died mid-node) writes nothing, as
    :func:`transition_project` does; in one of ``finished`` (it died at the node's end) writes nothing either, but
    only if the last Event of the project, the one that moved it there, was written by ``thread_id``. Any other
    status goes through :func:`transition_project` unchanged, so every move the table forbids still raises.

    Args:
        session: the open session (committed by the caller).
        project_id: the project's primary key.
        working: the node's working status, e.g. ``implementing``.
        finished: the statuses the node itself ends in, e.g. ``{implemented}``.
        reason: why, for the audit Event of a real move.
        thread_id: the graph thread running the node.
        actor: who the run acts for (``Event.actor``).

    Returns:
        The finished status found (the node is re-running after it finished), else None.

    Raises:
        LookupError: no such project.
        IllegalTransition: the table does not allow the move (including a finished status another thread reached).
        StaleStatus: a concurrent writer moved the project first.
    """
    current = (await session.exec(select(Project.status).where(Project.id == project_id))).first()
    if current is None:
        raise LookupError(f"project {project_id} does not exist")
    frm = P(current)
    if frm in finished and frm != working:
        last = await last_project_event(session, project_id)
        if last is not None and last.to_status == frm.value and last.thread_id == thread_id:
            return frm
    await transition_project(session, project_id, working, reason=reason, thread_id=thread_id, actor=actor)
    return None


async def transition_server(
    session: AsyncSession,
    server_id: int,
    to: S,
    *,
    reason: str,
    thread_id: str | None = None,
    actor: str | None = None,
) -> S:
    """Move a server to ``to`` and record an Event; same contract as :func:`transition_project`."""
    current = (await session.exec(select(Server.status).where(Server.id == server_id))).first()
    if current is None:
        raise LookupError(f"server {server_id} does not exist")
    frm = S(current)
    if frm == to:
        return frm
    if to not in SERVER_TRANSITIONS.get(frm, frozenset()):
        raise IllegalTransition(f"server {server_id} cannot move from {frm.value!r} to {to.value!r}")
    stmt = update(Server).where(Server.id == server_id, Server.status == frm).values(status=to)  # type: ignore[arg-type]
    result = await session.exec(stmt)  # type: ignore[call-overload]
    if result.rowcount != 1:
        raise StaleStatus(f"server {server_id} changed status concurrently; re-read and retry")
    session.add(
        Event(
            subject_type="server",
            subject_id=server_id,
            from_status=frm.value,
            to_status=to.value,
            reason=reason,
            thread_id=thread_id,
            actor=actor,
        )
    )
    return frm
