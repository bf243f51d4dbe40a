"""The end of a project's life: stop and start its service, undeploy it, delete it. Every move is on the trail.

- ``stop``: ``active -> stopped``; the service is stopped (playbooks/stop.yml), its release and port lease kept.
- ``start``: ``stopped -> active``; the live release is deployed again (the same commit, its signed verification
  checked again, its secrets) and must pass the deploy's checks (its own process on the port, the health URL).
- ``undeploy``: ``active``, ``stopped``, ``verified`` or ``cancelled`` -> ``undeployed``; the service is stopped and
  the port lease released; an update starts the project again.
- ``delete``: undeploys, then ``archived``: the project stays on the record with its trail and repository, and no
  worker, deploy or update touches it again.

The status moves only after the service did what the move says (a failed stop leaves the project where it was).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete as sql_delete
from sqlalchemy import update
from sqlmodel import col, select

from core.db import Database
from core.settings import Settings
from models.enums import ProjectStatus as P
from models.tables import PortLease, Project, Server, utcnow
from models.transitions import transition_project
from services.deploys import check_verification, live_deployment, run_deploy, stop_service
from services.identities import record
from services.secrets import SecretsError, service_env
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
        attested = await check_verification(settings, project, dep.commit_sha, dep.verification, check_expiry=False)
        env = await service_env(settings, db, project.id)
    except (VerificationRefused, SecretsError) as exc:
        raise LifecycleRefused(f"cannot start {name} at {dep.commit_sha[:10]}: {exc}") from exc
    result = await run_deploy(
        settings,
        project=project,
        server=server,
        commit=dep.commit_sha,
        port=dep.port,
        entrypoint=dep.entrypoint,
        health_path=dep.health_path,
        env=env,
        tree=attested.tree,
    )
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
        leases = (await s.exec(select(PortLease).where(col(PortLease.project_id) == project.id))).all()
        await s.exec(sql_delete(PortLease).where(col(PortLease.project_id) == project.id))  # type: ignore[call-overload]
        await s.exec(  # type: ignore[call-overload]
            update(Project).where(col(Project.id) == project.id).values(server_id=None, port=None, updated_at=utcnow())
        )
        for lease in leases:
            await record(
                s,
                subject_type="project",
                subject_id=project.id,
                action="lease_released",
                reason=f"port {lease.port} on server {lease.server_id}: the project was undeployed",
                actor=actor,
                thread_id=project.thread_id,
            )
    released = f"; port {leases[0].port} released" if leases else ""
    return LifecycleOutcome(name, P.undeployed.value, f"{name} is undeployed: its service is stopped{released}")


async def delete_project(settings: Settings, db: Database, name: str, *, actor: str) -> LifecycleOutcome:
    """Undeploy the project, then archive it.

    It stays on the record (trail, deployments, repository) and nothing works on it again.

    Raises:
        LookupError: no such project. LifecycleRefused: as :func:`undeploy_project`, or already archived.
    """
    project = await _project(db, name)
    if project.status == P.archived:
        raise LifecycleRefused(f"{name} is already archived")
    await undeploy_project(settings, db, name, actor=actor)
    project = await _project(db, name)
    await _move(db, project, P.archived, why="deleted on request; its repository is kept", actor=actor)
    where = f" ({project.repo_url})" if project.repo_url else ""
    return LifecycleOutcome(name, P.archived.value, f"{name} is deleted (archived); its repository is kept{where}")
