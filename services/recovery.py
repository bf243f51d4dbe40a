"""Recoveries the PO dispatches when a person asks to fix an incident.

An incident closes only when a fresh look at reality agrees: the repository is found again, the server answers its
check, the service answers its health URL.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import update
from sqlmodel import col, select

from core.breakers import Breakers
from core.db import Database
from core.settings import Settings
from infra.forge.base import Forge, RepoTransferred
from models.enums import ProjectStatus, ServerStatus
from models.tables import Incident, Project, Server, utcnow
from models.transitions import transition_project, transition_server
from services.deploys import live_deployment, redeploy
from services.identities import record
from services.incidents import open_incident, resolve_incident
from services.secrets import SecretsError
from services.servers import check_server, provision_server
from services.verification import VerificationRefused


async def recover(
    settings: Settings, db: Database, forge: Forge, incident_id: int, thread_id: str, *, actor: str
) -> dict[str, Any]:
    """Run the recovery for one incident as ``actor``; return ``{"incident", "kind", "resolved", "outcome"}``.

    Raises:
        ValueError: unknown or already resolved incident, or a kind with no recovery.
    """
    async with db.session() as s:
        incident = await s.get(Incident, incident_id)
    if incident is None:
        raise ValueError(f"no incident #{incident_id}")
    if incident.resolved_at is not None:
        raise ValueError(f"incident #{incident_id} is already resolved")
    handlers = {
        "repo_missing": _relink_repository,
        "repo_transferred": _relink_repository,
        "server_down": _recheck_server,
        "service_unhealthy": _redeploy_service,
        "provision_failed": _reprovision_server,
    }
    handler = handlers.get(incident.kind)
    if handler is None:
        raise ValueError(f"incident kind {incident.kind!r} has no recovery; it resolves when the sync sees it fixed")
    resolved, outcome = await handler(settings, db, forge, incident, thread_id, actor)
    return {"incident": incident_id, "kind": incident.kind, "resolved": resolved, "outcome": outcome}


async def _relink_repository(
    settings: Settings, db: Database, forge: Forge, incident: Incident, thread_id: str, actor: str
) -> tuple[bool, str]:
    """Look the repository up by name (a re-created repository has a new id) and re-link the project to it.

    GitHub answers an old name with the repository it was renamed or transferred to (a 301, followed): a
    repository now under another owner is not re-linked (``repo_transferred`` is opened, or refreshed); one renamed
    within the org is re-linked only if it is the project's own repository (same id), and the rename is recorded.
    """
    async with db.session() as s:
        project = await s.get(Project, incident.subject_id)
    assert project is not None
    name = (project.repo_full_name or project.name).split("/")[-1]
    try:
        repo = await asyncio.to_thread(forge.get_repo, name)
    except RepoTransferred as moved:
        message = (
            f"{moved}: project {project.name!r} is not re-linked to a repository outside the organization; transfer "
            f"it back, or re-create {moved.asked}, and ask me again"
        )
        async with db.session() as s:
            await open_incident(
                s, kind="repo_transferred", severity="critical", subject_type="project", subject_id=incident.subject_id,
                message=message,
            )  # fmt: skip
        return False, message
    if repo is None:
        return False, f"no repository named {name!r} exists: re-create it, and ask me again"
    if repo.moved_from is not None and repo.id != project.github_repo_id:
        return False, (
            f"{repo.moved_from} now redirects to {repo.full_name} (id {repo.id}), a repository renamed from that name "
            f"that is not {project.name}'s: re-create {repo.moved_from}, and ask me again"
        )
    async with db.session() as s:
        owner = (await s.exec(select(Project).where(Project.github_repo_id == repo.id))).first()
    if owner is not None and owner.id != project.id:
        return False, (
            f"{repo.full_name} (id {repo.id}) already belongs to project {owner.name!r} (the sync adopted it); "
            "forget one of the two projects first"
        )
    async with db.session() as s:
        row = await s.get(Project, project.id)
        assert row is not None
        row.github_repo_id, row.repo_full_name, row.repo_url = repo.id, repo.full_name, repo.html_url
        row.clone_url, row.default_branch = repo.clone_url, repo.default_branch
        s.add(row)
        if repo.moved_from is not None:
            renamed = f"repository {repo.moved_from} was renamed to {repo.full_name} (id {repo.id})"
            await record(
                s, subject_type="project", subject_id=row.id or 0, action="repo_renamed", actor=actor,
                thread_id=thread_id, reason=renamed,
            )  # fmt: skip
        if row.status == ProjectStatus.missing:
            await transition_project(
                s,
                row.id or 0,
                ProjectStatus.initialized,
                thread_id=thread_id,
                actor=actor,
                reason=f"re-linked to {repo.full_name} (id {repo.id})",
            )
        for kind in ("repo_missing", "repo_transferred"):
            await resolve_incident(s, kind=kind, subject_type="project", subject_id=incident.subject_id)
    return True, f"re-linked {project.name} to {repo.full_name} (id {repo.id}); it needs a new deploy to be active"


async def _recheck_server(
    settings: Settings, db: Database, forge: Forge, incident: Incident, thread_id: str, actor: str
) -> tuple[bool, str]:
    """Check the server now; ready again only if it answers."""
    async with db.session() as s:
        server = await s.get(Server, incident.subject_id)
    assert server is not None
    result = await check_server(settings, server, breakers=Breakers(settings, db))  # the host's circuit breaker
    if not result.ok:
        return False, f"server {server.name} still fails its check: {result.error}"
    async with db.session() as s:
        checked = update(Server).where(col(Server.id) == server.id)
        await s.exec(checked.values(fail_count=0, facts=result.facts, last_seen_at=utcnow()))  # type: ignore[call-overload]
        row = await s.get(Server, server.id)
        assert row is not None
        if row.status == ServerStatus.error:
            await transition_server(
                s,
                row.id or 0,
                ServerStatus.ready,
                reason="re-checked on request: answers",
                thread_id=thread_id,
                actor=actor,
            )
        await resolve_incident(s, kind="server_down", subject_type="server", subject_id=incident.subject_id)
    return True, f"server {server.name} answers its check again and is ready"


async def _redeploy_service(
    settings: Settings, db: Database, forge: Forge, incident: Incident, thread_id: str, actor: str
) -> tuple[bool, str]:
    """Deploy the last good commit again (the playbook restarts a dead service, leaves a live one alone).

    Not for a project whose repository is missing or was transferred out of the org (its clone URL is cleared):
    GitHub would serve the old URL from the new owner.

    The deployment's signed verification is checked again against that commit and its tree (not its expiry: it
    was valid when the commit was first deployed); a deployment without one is not redeployed.
    """
    async with db.session() as s:
        project = await s.get(Project, incident.subject_id)
        dep = await live_deployment(s, incident.subject_id)
        server = await s.get(Server, dep.server_id) if dep else None
    if project is None or dep is None or server is None:
        return False, "no successful deployment to restore"
    if project.status == ProjectStatus.missing or not project.clone_url:
        return False, (
            f"{project.name}'s repository is missing or left the organization (see its repository incident): "
            "nothing is deployed from its old URL; fix that incident first"
        )
    try:
        result = await redeploy(settings, db, project, dep, server)
    except VerificationRefused as exc:
        return False, f"cannot redeploy {project.name} at {dep.commit_sha[:10]}: {exc}"
    except SecretsError as exc:
        return False, f"cannot redeploy {project.name}: {exc}"
    if not result.ok:
        return False, f"redeploy of {dep.commit_sha[:10]} failed: {result.summary}"
    async with db.session() as s:
        await resolve_incident(s, kind="service_unhealthy", subject_type="project", subject_id=incident.subject_id)
    return True, f"{project.name} redeployed at {dep.commit_sha[:10]}; {dep.url} answers"


async def _reprovision_server(
    settings: Settings, db: Database, forge: Forge, incident: Incident, thread_id: str, actor: str
) -> tuple[bool, str]:
    """Run the provisioning playbook again now (error -> provisioning -> ready, or back to error)."""
    async with db.session() as s:
        server = await s.get(Server, incident.subject_id)
        if server is None:
            return False, f"server #{incident.subject_id} no longer exists"
        if server.status == ServerStatus.error:
            await transition_server(
                s,
                incident.subject_id,
                ServerStatus.provisioning,
                reason="re-provision on request",
                thread_id=thread_id,
                actor=actor,
            )
        server = await s.get(Server, incident.subject_id)
    assert server is not None
    if server.status != ServerStatus.provisioning:
        return False, f"server {server.name} is {server.status.value}, not waiting for provisioning"
    result = await provision_server(settings, db, server, actor=actor)
    if result.ok:
        return True, f"server {server.name} provisioned again and is ready"
    return False, f"provisioning server {server.name} failed again: {result.summary.splitlines()[0]}"
