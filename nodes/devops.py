"""DevOps node: pre-flight check, then ansible-runner runs playbooks/deploy.yml (verified -> deploying -> active)."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage
from langgraph.runtime import Runtime
from sqlalchemy import update
from sqlmodel import col, select

from graphs.context import Context
from graphs.state import EngineeringResult, OrchestratorState, ServerInfo
from infra.ansible import PlaybookResult
from models.enums import DeploymentStatus, ProjectStatus, ServerStatus
from models.tables import Deployment, Event, PortLease, Project, Server, utcnow
from models.transitions import last_project_event, transition_project
from services.cancel import cancel_request
from services.deploys import check_verification, local_release_problem, rolled_back_to, run_deploy
from services.identities import record
from services.incidents import open_incident
from services.notifications import deploy_event
from services.secrets import SecretsError, flag_missing_secrets, missing_message, missing_secrets, service_env
from services.verification import Attestation, VerificationRefused


async def preflight(ctx: Context, project_id: int, info: ServerInfo | None) -> str | None:
    """Why the deploy cannot start, or None.

    The server must be ready, the lease must still be the project's, this machine must be able to run a release as
    the service's user (:func:`services.deploys.local_release_problem`), and every secret the project's design
    requires must be stored (missing ones also set the project's ``setup_required`` flag; the answer names them
    and the command that sets each, never a value).
    """
    if info is None:
        return "no server was leased for this project (waiting for resources)"
    async with ctx.db.session() as s:
        server = await s.get(Server, info["server_id"])
        lease = (await s.exec(select(PortLease).where(PortLease.project_id == project_id))).first()
        project = await s.get(Project, project_id)
    if server is None or server.status != ServerStatus.ready:
        return f"server {info['name']} is not ready ({server.status if server else 'gone'})"
    if lease is None or (lease.server_id, lease.port) != (info["server_id"], info["port"]):
        return f"the port lease {info['name']}:{info['port']} is no longer held by this project"
    if server.connection == "local" and (problem := local_release_problem(ctx.settings)):
        return problem
    missing = await flag_missing_secrets(ctx.db, project_id)
    if missing:
        return missing_message(project.name if project else f"project #{project_id}", missing)
    return None


async def deploy_project(state: OrchestratorState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Deploy the verified commit; record a Deployment keyed by (project, commit, server, port).

    A re-run (after a crash, or a second deploy of the same commit) reuses the Deployment row, and the playbook
    leaves a running copy of the same commit alone, so no second copy starts. A re-run that finds the deploy this
    thread finished (the process died after the deploy was recorded, before the step's checkpoint) reports the
    recorded outcome and runs nothing: the project's status and Events moved in the same transaction as the row.

    A cancel of the project that stands (``services/cancel.py``) starts nothing. Refused by the pre-flight check
    for missing secrets, it says which (``deployment["missing_secrets"]``) and
    the graph asks for approval again, so the person sets them and approves without starting over.
    """
    ctx = runtime.context
    pid, eng, info = state["project_id"], state["engineering"], state.get("server_info")
    assert pid is not None and eng is not None
    problem = await preflight(ctx, pid, info)
    if problem is not None:
        return await _refused(ctx, pid, problem)
    try:
        env = await service_env(ctx.settings, ctx.db, pid)
    except SecretsError as exc:  # a wrong key: named, never the ciphertext (nothing moved yet)
        return {"deployment": {"status": "failed", "summary": f"pre-flight check failed: {exc}"}}
    assert info is not None
    key = f"{pid}:{eng['commit']}:{info['server_id']}:{info['port']}"
    host = "127.0.0.1" if info["connection"] == "local" else info["address"]
    url = f"http://{host}:{info['port']}{eng['health_path']}"
    async with ctx.db.session() as s:
        row = (await s.exec(select(Deployment).where(Deployment.idempotency_key == key))).first()
        last = await last_project_event(s, pid)
    if row is not None and _finished_here(row, last, ctx.thread_id):
        return {"deployment": _outcome(row, eng["commit"], url)}
    cancelled = await cancel_request(ctx.db, pid)
    if cancelled is not None:  # asked while the run was stopped mid-way: nothing starts (settle_project follows)
        return {"deployment": {"status": "cancelled", "summary": f"cancelled by {cancelled[0]} before it started"}}
    try:
        attested = await _verified(ctx, pid, eng)
    except VerificationRefused as exc:
        return await _unverified(ctx, pid, eng["commit"], str(exc))
    approver = (state.get("approval") or {}).get("by")
    project, server, row = await _start(ctx, pid, eng, info, key=key, url=url, approver=approver)
    result = await run_deploy(
        ctx.settings,
        project=project,
        server=server,
        commit=eng["commit"],
        port=info["port"],
        entrypoint=eng["entrypoint"],
        health_path=eng["health_path"],
        env=env,
        tree=attested.tree,
    )
    dep = await _record(ctx, pid, row, result, url=url)
    return {"deployment": _outcome(dep, eng["commit"], url)}


async def _verified(ctx: Context, pid: int, eng: EngineeringResult) -> Attestation:
    """The signed verification checked against the commit this deploy checks out (and its tree in the repository).

    Raises:
        VerificationRefused: see :func:`services.deploys.check_verification`.
    """
    async with ctx.db.session() as s:
        project = await s.get(Project, pid)
    assert project is not None
    return await check_verification(ctx.settings, project, eng["commit"], eng.get("verification"))


async def _unverified(ctx: Context, pid: int, commit: str, why: str) -> dict[str, Any]:
    """Refuse the deploy: nothing ran, the project keeps its status, the refusal is on the trail (an Event)."""
    async with ctx.db.session() as s:
        await record(
            s,
            subject_type="project",
            subject_id=pid,
            action="deploy_refused",
            reason=f"deploy of {commit[:10]} refused: {why}",
            actor=ctx.actor,
            thread_id=ctx.thread_id,
        )
    summary = f"refused: the signed verification does not cover this deploy: {why}"
    return {"deployment": {"status": "failed", "summary": summary, "commit": commit, "refused": True}}


async def _refused(ctx: Context, pid: int, problem: str) -> dict[str, Any]:
    """The pre-flight refusal as the node's update; missing secrets are named so the approval can list them."""
    summary = f"pre-flight check failed: {problem}"
    missing = await missing_secrets(ctx.db, pid)
    if missing:
        blocked = {"status": "failed", "summary": summary, "missing_secrets": missing}
        return {"deployment": blocked, "messages": [AIMessage(content=f"Not deployed yet: {problem}.")]}
    return {"deployment": {"status": "failed", "summary": summary}}


async def _start(
    ctx: Context, pid: int, eng: EngineeringResult, info: ServerInfo, *, key: str, url: str, approver: str | None
) -> tuple[Project, Server, Deployment]:
    """Move verified -> deploying and get the Deployment row for ``key`` (reused by a re-run), in one transaction.

    ``approver`` (the identity that approved, from the approval's answer) is written on a new row.
    """
    async with ctx.db.session() as s:
        await transition_project(
            s,
            pid,
            ProjectStatus.deploying,
            reason=f"deploying {eng['commit'][:10]} to {info['name']}:{info['port']}",
            thread_id=ctx.thread_id,
            actor=ctx.actor,
        )
        project = await s.get(Project, pid)
        server = await s.get(Server, info["server_id"])
        row = (await s.exec(select(Deployment).where(Deployment.idempotency_key == key))).first()
        if row is None:
            row = Deployment(
                project_id=pid,
                commit_sha=eng["commit"],
                server_id=info["server_id"],
                port=info["port"],
                status=DeploymentStatus.running,
                entrypoint=eng["entrypoint"],
                health_path=eng["health_path"],
                idempotency_key=key,
                thread_id=ctx.thread_id,
                url=url,
                approved_by=approver,
                verification=eng.get("verification"),
            )
            s.add(row)
            await s.flush()
    assert project is not None and server is not None and row.id is not None
    return project, server, row


async def _record(ctx: Context, pid: int, row: Deployment, result: PlaybookResult, *, url: str) -> Deployment:
    """The outcome in one transaction: the row's status, rc and summary, and deploying -> active (or verified).

    A failed release that was rolled back (deploy.yml brought the previous one back, proven like a deploy) is
    ``rolled_back``: the project stays ``active`` on the previous commit and a ``deploy_rolled_back`` incident says
    what failed.
    """
    previous = rolled_back_to(result)
    status = (
        DeploymentStatus.succeeded
        if result.ok
        else DeploymentStatus.rolled_back
        if previous
        else DeploymentStatus.failed
    )
    async with ctx.db.session() as s:
        dep = await s.get(Deployment, row.id)
        assert dep is not None
        dep.status, dep.ansible_rc, dep.summary, dep.finished_at = status, result.rc, result.summary, utcnow()
        s.add(dep)
        to = ProjectStatus.active if result.ok or previous else ProjectStatus.verified
        why = f"health check passed at {url}"
        if previous:
            why = f"deploy of {row.commit_sha[:10]} failed its checks; rolled back to {previous[:10]}, which answers"
            await open_incident(
                s,
                kind="deploy_rolled_back",
                severity="warning",
                subject_type="project",
                subject_id=pid,
                message=f"{why} at {url}. {result.summary}"[:2000],
            )
        elif not result.ok:
            why = f"deploy failed (ansible {result.status}, rc {result.rc})"
        await transition_project(s, pid, to, reason=why, thread_id=ctx.thread_id, actor=ctx.actor)
        await deploy_event(s, dep, project_id=pid)
        if result.ok:  # it has had everything a deploy needs: a design, a verified commit, a server and a port
            await s.exec(update(Project).where(col(Project.id) == pid).values(setup_required=False))  # type: ignore[call-overload]
    return dep


def _finished_here(row: Deployment, last: Event | None, thread_id: str) -> bool:
    """Whether this thread already finished this deploy: the project's last move is this row's outcome, by us."""
    if row.status == DeploymentStatus.running or last is None or last.thread_id != thread_id:
        return False
    live = (DeploymentStatus.succeeded, DeploymentStatus.rolled_back)
    outcome = ProjectStatus.active if row.status in live else ProjectStatus.verified
    return (last.from_status, last.to_status) == (ProjectStatus.deploying.value, outcome.value)


def _outcome(row: Deployment, commit: str, url: str) -> dict[str, Any]:
    status = DeploymentStatus(row.status)
    return {
        "status": status.value,
        "url": url,
        "commit": commit,
        "rc": row.ansible_rc,
        "summary": row.summary,
        "deployment_id": row.id,
    }
