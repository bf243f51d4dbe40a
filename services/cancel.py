"""Cancelling a project's work in flight: the request, and how the project is left once the work has stopped.

A cancel is cooperative, the way Temporal's cancellation requests are: :func:`request_cancel` records who asked
(``Project.cancel_requested_by``) and every engineering round and agent step reads it (:func:`cancel_request`), so a
run going on in any process stops before its next model call. A run that waits at an interrupt or stopped mid-way
is driven to its end by the runtime (``OrchestratorRuntime.cancel_project``). Once the work has stopped,
:func:`settle` leaves the project consistent:

- nothing of it was ever deployed (or its last deploy failed): ``cancelled``, its port lease released;
- an update was cancelled while its last deploy is live: back to ``active``, the lease kept (the live release never
  stopped);

and the trail names who cancelled and why.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.db import Database
from models.enums import DeploymentStatus
from models.enums import ProjectStatus as P
from models.tables import Deployment, Project, utcnow
from models.transitions import transition_project
from services.identities import record
from services.leases import release_leases

CANCELLABLE = frozenset(
    {
        P.draft,
        P.estimated,
        P.provisioning,
        P.initialized,
        P.designing,
        P.designed,
        P.implementing,
        P.implemented,
        P.verifying,
        P.verified,
        P.maintenance,
    }
)
"""Statuses with work in flight or waiting (a deploy approval included). A deploy under way is not cancelled: it
ends by itself within ``ORCH_DEPLOY_TIMEOUT_S``."""


class CancelRefused(ValueError):
    """The project has no work in flight to cancel (its status says why); nothing was changed."""


async def request_cancel(db: Database, name: str, *, actor: str, reason: str) -> Project:
    """Ask for the project's work to stop, on the record as ``cancel_requested``.

    Asking again while a request stands keeps the first one (its asker stays on the record).

    Args:
        db: the orchestrator's database.
        name: the project's name.
        actor: who asks (``Event.actor`` form).
        reason: why, in a person's words (bounded to 300 characters).

    Returns:
        The project, its ``cancel_requested_by`` set.

    Raises:
        LookupError: no such project.
        CancelRefused: its status has no work in flight (``active``, ``deploying``, ``cancelled``...).
    """
    reason = " ".join(reason.split())[:300] or "no reason given"
    async with db.session() as s:
        project = (await s.exec(select(Project).where(Project.name == name))).first()
        if project is None:
            raise LookupError(f"unknown project {name!r}: list the projects to see the known ones")
        if project.status not in CANCELLABLE:
            raise CancelRefused(_nothing_in_flight(project))
        if project.cancel_requested_by is None:
            project.cancel_requested_by, project.cancel_reason = actor, reason
            project.updated_at = utcnow()
            s.add(project)
            assert project.id is not None
            await record(
                s,
                subject_type="project",
                subject_id=project.id,
                action="cancel_requested",
                reason=f"{project.status.value}: {reason}",
                actor=actor,
                thread_id=project.thread_id,
            )
        await s.flush()
        await s.refresh(project)
    return project


async def cancel_request(db: Database, project_id: int) -> tuple[str, str] | None:
    """``(who, why)`` when a cancel of the project stands, else None. One indexed read; called before model calls."""
    async with db.session() as s:
        row = (
            await s.exec(
                select(Project.cancel_requested_by, Project.cancel_reason).where(col(Project.id) == project_id)
            )
        ).first()
    if row is None or row[0] is None:
        return None
    return row[0], row[1] or ""


async def settle(db: Database, project_id: int, *, actor: str, reason: str, thread_id: str | None = None) -> P | None:
    """Leave a project whose work stopped consistent: ``cancelled`` (lease released) or back to ``active``.

    Idempotent: a re-run after a crash finds the project settled and changes nothing. A project in a status with no
    work in flight (a deploy that went ahead, a project already settled) is left alone.

    Args:
        db: the orchestrator's database.
        project_id: the project's primary key.
        actor: who stopped the work (the cancel's asker, or whoever answered ``stop``).
        reason: why, for the trail.
        thread_id: the thread whose run stopped, if any.

    Returns:
        The status the project was left in, or None when it was left alone.
    """
    async with db.session() as s:
        project = await s.get(Project, project_id)
        if project is None or project.status not in CANCELLABLE:
            if project is not None and project.cancel_requested_by is not None:
                await _clear_request(s, project_id)
            return None
        live = await _live_deployment(s, project_id)
        to = P.active if live is not None else P.cancelled
        why = f"cancelled: {reason}" + (f"; the live release ({live.commit_sha[:10]}) keeps running" if live else "")
        await transition_project(s, project_id, to, reason=why[:500], thread_id=thread_id, actor=actor)
        if to == P.cancelled:
            await release_leases(s, project_id, why="the project was cancelled", actor=actor, thread_id=thread_id)
        await _clear_request(s, project_id)
    return to


async def _clear_request(s: AsyncSession, project_id: int) -> None:
    await s.exec(  # type: ignore[call-overload]
        update(Project).where(col(Project.id) == project_id).values(cancel_requested_by=None, cancel_reason=None)
    )


async def _live_deployment(s: AsyncSession, project_id: int) -> Deployment | None:
    """The deployment whose release runs, or None.

    The latest that succeeded, unless a later one failed outright (which stopped it); a rolled-back deploy left the
    one before it running, so it is skipped.
    """
    rows = await s.exec(
        select(Deployment)
        .where(col(Deployment.project_id) == project_id, col(Deployment.status) != DeploymentStatus.rolled_back)
        .order_by(col(Deployment.id).desc())
    )
    latest = rows.first()
    return latest if latest is not None and latest.status == DeploymentStatus.succeeded else None


def _nothing_in_flight(project: Project) -> str:
    if project.status == P.deploying:
        return f"{project.name} is deploying right now; a deploy is not cancelled, it ends by itself"
    if project.status == P.cancelled:
        return f"{project.name} is already cancelled"
    return f"{project.name} is {project.status.value}: it has no work in flight to cancel"
