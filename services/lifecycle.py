"""The end of a project's life: stop and start its service, undeploy it, delete it. Every move is on the trail.

- ``stop``: ``active -> stopped``; the service is stopped (playbooks/stop.yml), its release and port lease kept.
- ``start``: ``stopped -> active``; the live release is deployed again (the same commit, its signed verification
  checked again, its secrets) and must pass the deploy's checks (its own process on the port, the health URL).
- ``undeploy``: ``active``, ``stopped``, ``verified`` or ``cancelled`` -> ``undeployed``; the service is stopped and
  the port lease released; an update starts the project again.
- ``delete``: undeploys, then ``archived``: the project stays on the record with its trail and repository, and no
  worker, deploy or update touches it again.
- ``rollback``: ``active -> deploying -> active`` on an earlier good release (its own folder, kept on the target),
  recorded like any deploy.

The status moves only after the service did what the move says (a failed stop leaves the project where it was).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from sqlalchemy import update
from sqlmodel import col, select

from core.db import Database
from core.settings import Settings
from infra.forge.base import ForgeError
from infra.forge.factory import make_forge
from models.enums import DeploymentStatus
from models.enums import ProjectStatus as P
from models.tables import Deployment, Project, Server, utcnow
from models.transitions import transition_project
from services.deploys import live_deployment, redeploy, rolled_back_to, stop_service
from services.identities import record
from services.leases import release_leases
from services.notifications import deploy_event
from services.secrets import SecretsError
from services.verification import VerificationRefused

UNDEPLOYABLE = frozenset({P.active, P.stopped, P.verified, P.cancelled})
"""Statuses ``undeploy`` (and so ``delete``) starts from; anything else has work in flight (cancel it first)."""


class LifecycleRefused(ValueError):
    """The move does not fit the project's status, or the service did not do it; nothing moved. Says why."""


@dataclass(frozen=True)
class LifecycleOutcome:
    """What a move did: the project's name, its status now, and the sentence a person reads."""

    project: str
    status: str
    message: str


async def _project(db: Database, name: str) -> Project:
    async with db.session() as s:
        project = (await s.exec(select(Project).where(Project.name == name))).first()
    if project is None:
        raise LookupError(f"unknown project {name!r}: list the projects to see the known ones")
    return project


async def _server_of(db: Database, project: Project) -> Server | None:
    """Where the project's service runs (its live deployment's server, else the server it leases a port on)."""
    assert project.id is not None
    async with db.session() as s:
        dep = await live_deployment(s, project.id)
        server_id = dep.server_id if dep is not None else project.server_id
        return await s.get(Server, server_id) if server_id is not None else None


async def _move(db: Database, project: Project, to: P, *, why: str, actor: str) -> None:
    assert project.id is not None
    async with db.session() as s:
        await transition_project(s, project.id, to, reason=why, thread_id=project.thread_id, actor=actor)


async def stop_project(settings: Settings, db: Database, name: str, *, actor: str) -> LifecycleOutcome:
    """Stop a live project's service; its release and port stay reserved for ``start``.

    Raises:
        LookupError: no such project. LifecycleRefused: it is not ``active``, or the stop failed (Ansible's words).
    """
    project = await _project(db, name)
    if project.status != P.active:
        raise LifecycleRefused(f"{name} is {project.status.value}: only an active project's service can be stopped")
    server = await _server_of(db, project)
    if server is not None:
        result = await stop_service(settings, project=name, server=server)
        if not result.ok:
            raise LifecycleRefused(f"stopping {name} failed: {result.summary}")
    await _move(db, project, P.stopped, why="service stopped on request", actor=actor)
    return LifecycleOutcome(name, P.stopped.value, f"{name} is stopped; `orchestrator start {name}` starts it again")


async def start_project(settings: Settings, db: Database, name: str, *, actor: str) -> LifecycleOutcome:
    """Start a stopped project's live release again, proven like a deploy (its process on the port, its health).

    Raises:
        LookupError: no such project. LifecycleRefused: it is not ``stopped``, it has no deployment to start, its
            signed verification or secrets do not allow it, or the release failed its checks.
    """
    project = await _project(db, name)
    if project.status != P.stopped:
        raise LifecycleRefused(f"{name} is {project.status.value}: only a stopped project can be started")
    assert project.id is not None
    async with db.session() as s:
        dep = await live_deployment(s, project.id)
        server = await s.get(Server, dep.server_id) if dep is not None else None
    if dep is None or server is None:
        raise LifecycleRefused(f"{name} has no successful deployment to start")
    try:
        result = await redeploy(settings, db, project, dep, server)
    except (VerificationRefused, SecretsError) as exc:
        raise LifecycleRefused(f"cannot start {name} at {dep.commit_sha[:10]}: {exc}") from exc
    if not result.ok:
        raise LifecycleRefused(f"{name} did not start at {dep.commit_sha[:10]}: {result.summary}")
    await _move(db, project, P.active, why=f"started again at {dep.commit_sha[:10]}; {dep.url} answers", actor=actor)
    return LifecycleOutcome(name, P.active.value, f"{name} is active again: {dep.url} answers")


async def undeploy_project(settings: Settings, db: Database, name: str, *, actor: str) -> LifecycleOutcome:
    """Stop the project's service (if any) and release its port lease: nothing of it runs or is reserved.

    Raises:
        LookupError: no such project. LifecycleRefused: work is in flight (cancel it first), or the stop failed.
    """
    project = await _project(db, name)
    if project.status == P.undeployed:
        return LifecycleOutcome(name, P.undeployed.value, f"{name} is already undeployed")
    if project.status not in UNDEPLOYABLE:
        raise LifecycleRefused(
            f"{name} is {project.status.value}: undeploy a project that is active, stopped, verified or cancelled "
            f"(cancel work in flight first: orchestrator cancel {name})"
        )
    server = await _server_of(db, project)
    if server is not None:
        result = await stop_service(settings, project=name, server=server)
        if not result.ok:
            raise LifecycleRefused(f"stopping {name} failed: {result.summary}")
    assert project.id is not None
    async with db.session() as s:
        await transition_project(
            s, project.id, P.undeployed, reason="undeployed on request", thread_id=project.thread_id, actor=actor
        )
        leases = await release_leases(
            s, project.id, why="the project was undeployed", actor=actor, thread_id=project.thread_id
        )
    released = f"; port {leases[0].port} released" if leases else ""
    return LifecycleOutcome(name, P.undeployed.value, f"{name} is undeployed: its service is stopped{released}")


async def delete_project(
    settings: Settings, db: Database, name: str, *, actor: str, archive_repo: bool = False
) -> LifecycleOutcome:
    """Undeploy the project, then archive it.

    It stays on the record (trail, deployments) and nothing works on it again. Its repository is kept as it is, or
    with ``archive_repo`` archived on its forge (read-only; GitHub's archive), on the trail as ``repo_archived``.

    Raises:
        LookupError: no such project. LifecycleRefused: as :func:`undeploy_project`, or already archived.
    """
    project = await _project(db, name)
    if project.status == P.archived:
        raise LifecycleRefused(f"{name} is already archived")
    await undeploy_project(settings, db, name, actor=actor)
    project = await _project(db, name)
    kept = "kept as it is"
    if archive_repo:
        try:
            await asyncio.to_thread(make_forge(settings).archive_repo, name)
        except ForgeError as exc:
            raise LifecycleRefused(f"{name} is undeployed, but its repository could not be archived: {exc}") from exc
        kept = "archived (read-only)"
        assert project.id is not None
        async with db.session() as s:
            await record(
                s,
                subject_type="project",
                subject_id=project.id,
                action="repo_archived",
                reason=f"repository {project.repo_full_name or name} archived on request",
                actor=actor,
                thread_id=project.thread_id,
            )
    await _move(db, project, P.archived, why=f"deleted on request; its repository is {kept}", actor=actor)
    where = f" ({project.repo_url})" if project.repo_url else ""
    return LifecycleOutcome(name, P.archived.value, f"{name} is deleted (archived); its repository is {kept}{where}")


async def deployments_of(db: Database, name: str) -> list[Deployment]:
    """The project's deployments, newest first (what ``rollback --to`` may name).

    Raises:
        LookupError: no such project.
    """
    project = await _project(db, name)
    async with db.session() as s:
        rows = await s.exec(
            select(Deployment).where(col(Deployment.project_id) == project.id).order_by(col(Deployment.id).desc())
        )
        return list(rows.all())


async def rollback_project(
    settings: Settings, db: Database, name: str, *, actor: str, to: int | None = None
) -> LifecycleOutcome:
    """Deploy an earlier good release again, recorded like any deploy (a Deployment naming ``actor`` as approver).

    Args:
        settings: where releases live, how deploys run.
        db: the orchestrator's database.
        name: the project's name.
        actor: who asks (the new Deployment's approver and the trail's actor).
        to: the id of a succeeded deployment of this project; None: the last succeeded one before the live one.

    The release's folder is reused as it is; its signed verification is checked again (not its expiry) and it must
    pass the deploy's checks (:func:`services.deploys.redeploy`). If it fails them, the playbook brings the live
    release back (``rolled_back``); a refused verification runs nothing (the new Deployment is ``failed``).

    Raises:
        LookupError: no such project. LifecycleRefused: not ``active``, no such (or no earlier) good deployment, the
            deployment named is what runs, or the release was refused or failed its checks.
    """
    project = await _project(db, name)
    if project.status != P.active:
        raise LifecycleRefused(f"{name} is {project.status.value}: only an active project can be rolled back")
    assert project.id is not None
    history = await deployments_of(db, name)
    good = [d for d in history if d.status == DeploymentStatus.succeeded]
    live = good[0] if good else None
    if to is None:
        target = next((d for d in good[1:] if live is None or d.commit_sha != live.commit_sha), None)
        if target is None:
            raise LifecycleRefused(f"{name} has no earlier good deployment to roll back to")
    else:
        target = next((d for d in good if d.id == to), None)
        if target is None:
            raise LifecycleRefused(f"deployment {to} is not a succeeded deployment of {name}")
    if live is not None and target.commit_sha == live.commit_sha:
        raise LifecycleRefused(f"{name} already runs {target.commit_sha[:10]} (deployment {live.id})")
    async with db.session() as s:
        server = await s.get(Server, target.server_id)
    assert server is not None
    why = f"rollback to {target.commit_sha[:10]} (deployment {target.id}) on request"
    async with db.session() as s:
        await transition_project(s, project.id, P.deploying, reason=why, thread_id=project.thread_id, actor=actor)
        row = Deployment(
            project_id=project.id,
            commit_sha=target.commit_sha,
            server_id=target.server_id,
            port=target.port,
            status=DeploymentStatus.running,
            entrypoint=target.entrypoint,
            health_path=target.health_path,
            idempotency_key=f"rollback:{project.id}:{target.commit_sha}:{uuid.uuid4().hex[:12]}",
            thread_id=project.thread_id,
            url=target.url,
            approved_by=actor,
            verification=target.verification,
        )
        s.add(row)
    try:
        result = await redeploy(settings, db, project, target, server)
    except (VerificationRefused, SecretsError) as exc:  # refused before anything ran: the live release runs on
        refused = f"cannot roll {name} back to {target.commit_sha[:10]}: {exc}"
        async with db.session() as s:
            await s.exec(  # type: ignore[call-overload]
                update(Deployment)
                .where(col(Deployment.id) == row.id)
                .values(status=DeploymentStatus.failed, summary=refused, finished_at=utcnow())
            )
            await transition_project(s, project.id, P.active, reason=refused, thread_id=project.thread_id, actor=actor)
        raise LifecycleRefused(refused) from exc
    back = rolled_back_to(result)
    status = (
        DeploymentStatus.succeeded if result.ok else DeploymentStatus.rolled_back if back else DeploymentStatus.failed
    )
    async with db.session() as s:
        await s.exec(  # type: ignore[call-overload]
            update(Deployment)
            .where(col(Deployment.id) == row.id)
            .values(status=status, ansible_rc=result.rc, summary=result.summary, finished_at=utcnow())
        )
        to_status = P.active if result.ok or back else P.verified
        done = f"rolled back to {target.commit_sha[:10]}; {target.url} answers" if result.ok else result.summary[:300]
        await transition_project(s, project.id, to_status, reason=done, thread_id=project.thread_id, actor=actor)
        await deploy_event(s, await s.get(Deployment, row.id), project_id=project.id)
    if not result.ok:
        kept = f"; the release before it answers again ({back[:10]})" if back else ""
        raise LifecycleRefused(
            f"the rollback of {name} to {target.commit_sha[:10]} failed its checks{kept}: {result.summary}"
        )
    return LifecycleOutcome(name, P.active.value, f"{name} runs {target.commit_sha[:10]} again: {target.url} answers")
