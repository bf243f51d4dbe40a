"""health_checker: ask every active project's service whether it is healthy, from where the service runs.

For each project in status ``active`` whose latest succeeded Deployment has a URL:

* on a ``local`` server, an HTTP GET of that URL from here (httpx);
* on an SSH server, ``curl`` of ``http://127.0.0.1:PORT/PATH`` run on the host over SSH (the service's port need
  not be exposed), through :func:`infra.ssh.ssh_run`.

A 2xx/3xx answer is healthy only when the process serving the port is the deployed service's (:mod:`infra.ports`:
the same proof the deploy makes; behind a blue/green deploy switch, the switch holds the port and forwards to the
live release's own port, and both links are proven), so a stranger that took the port is unhealthy, named.
Consecutive unhealthy answers are counted per project in ``SyncCursor(key="health:project:<id>")
.consecutive_failures`` (an atomic upsert); reaching ``settings.sync_failure_threshold`` opens a critical
``service_unhealthy`` incident on the project, a healthy answer resets the count and resolves it. The project's
status never changes here: it stays ``active`` and the incident says it is unhealthy.

When the check itself cannot be made (SSH to the host fails), the service's health is unknown: the pass counts a
transient failure and leaves the project's count alone, since server_sync already reports the host as down. The SSH
calls go through the host's circuit breaker (:mod:`core.breakers`, the same one server_sync uses): while it is open
the check is not tried and the health is unknown, with the breaker's "unavailable since ..., next try at ..." text.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncssh
import httpx
from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.breakers import Breakers
from core.settings import Settings
from infra.ports import PortOwner, port_owner_command, port_owner_here
from infra.ssh import client_options, describe_error, ssh_run
from models.enums import DeploymentStatus, ProjectStatus
from models.tables import Deployment, Project, Server, SyncCursor, utcnow
from services.deploys import REMOTE_PYTHON, release_root
from services.incidents import open_incident, resolve_incident
from services.servers import overall_timeout
from sync_workers.base import PassSummary, SyncContext


@dataclass(frozen=True)
class HealthTarget:
    """What to check for one project: its latest succeeded deployment's URL and the server it runs on."""

    project_id: int
    project_name: str
    url: str
    server: Server
    pid_file: str
    """The deployed service's pid file on its server (its pid is its session id, see deploy.yml)."""


@dataclass(frozen=True)
class HealthResult:
    """One check: ``healthy`` True/False, or None when the check could not be made (host unreachable)."""

    healthy: bool | None
    detail: str


def cursor_key(project_id: int) -> str:
    """The SyncCursor key holding a project's consecutive failed health checks."""
    return f"health:project:{project_id}"


def curl_command(url: str, timeout_s: float) -> str:
    """The command run on an SSH host: ``curl`` of the URL's port and path on the host's own loopback."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = f"{parts.scheme or 'http'}://127.0.0.1:{port}{parts.path or '/'}"
    if parts.query:
        target += f"?{parts.query}"
    return f"curl -fsS -o /dev/null -w '%{{http_code}}' --max-time {timeout_s:g} {shlex.quote(target)}"


async def _targets(ctx: SyncContext) -> list[HealthTarget]:
    async with ctx.db.session() as s:
        projects = (
            await s.exec(select(Project).where(Project.status == ProjectStatus.active).order_by(col(Project.id)))
        ).all()
        targets = []
        for project in projects:
            deploy = (
                await s.exec(
                    select(Deployment)
                    .where(Deployment.project_id == project.id, Deployment.status == DeploymentStatus.succeeded)
                    .order_by(col(Deployment.id).desc())
                )
            ).first()
            if deploy is None or not deploy.url or project.id is None:
                continue
            server = await s.get(Server, deploy.server_id)
            if server is not None:
                pid_file = f"{release_root(ctx.settings, server)}/{project.name}/run/service.pid"
                targets.append(HealthTarget(project.id, project.name, deploy.url, server, pid_file))
    return targets


async def check_health(
    settings: Settings,
    target: HealthTarget,
    *,
    http: httpx.AsyncClient,
    options: asyncssh.SSHClientConnectionOptions | None = None,
    breakers: Breakers | None = None,
) -> HealthResult:
    """Check one project's health URL from where it runs; never raises.

    Args:
        settings: ``ssh_timeout_s`` bounds the HTTP request, the SSH connection and the remote command.
        target: the project, its URL and its server.
        http: the client for ``local`` servers.
        options: pre-built SSH options (see :func:`infra.ssh.client_options`).
        breakers: the circuit breakers the SSH calls go through (the host's ``ssh:<address>:<port>``); while it is
            open the health is unknown at once ("SSH host A:P unavailable since ..."). None guards nothing.

    Returns:
        healthy True (2xx/3xx), False (an error status, no answer), or None (the SSH host could not be reached).
    """
    timeout = settings.ssh_timeout_s
    try:
        async with asyncio.timeout(overall_timeout(settings)):
            port = urlsplit(target.url).port or 80
            if target.server.connection == "local":
                response = await http.get(target.url, timeout=timeout)
                ok = 200 <= response.status_code < 400
                answer = HealthResult(ok, f"HTTP {response.status_code} from {target.url}")
                owner = await port_owner_here(port, target.pid_file, timeout) if ok else None
                return _owned(answer, owner)
            command = curl_command(target.url, timeout)
            try:
                done = await ssh_run(settings, target.server, command, options=options, check=False, breakers=breakers)
            except asyncssh.TimeoutError:
                return HealthResult(False, f"no answer from {target.url} within {timeout:g}s (curl on the host)")
            code = str(done.stdout or "").strip()
            if done.exit_status == 0:
                answer = HealthResult(True, f"HTTP {code} from {target.url} (curl on {target.server.name})")
                proof = port_owner_command(REMOTE_PYTHON, port, target.pid_file)
                run = await ssh_run(settings, target.server, proof, options=options, check=False, breakers=breakers)
                code_of = run.exit_status if run.exit_status in (0, 1, 2) else 1
                return _owned(answer, PortOwner(code_of, str(run.stdout or run.stderr or "").strip()))
            reason = str(done.stderr or "").strip() or f"curl exit {done.exit_status}"
            http_part = f"HTTP {code}: " if code and code != "000" else ""
            return HealthResult(False, f"{http_part}{reason} ({target.url}, curl on {target.server.name})"[:300])
    except httpx.HTTPError as exc:
        return HealthResult(False, f"{type(exc).__name__} from {target.url}: {exc}"[:300])
    except Exception as exc:  # noqa: BLE001 - SSH could not run the check: health unknown
        error = describe_error(exc, timeout)
        return HealthResult(None, f"cannot reach {target.server.name} to check {target.url}: {error}")


def _owned(answer: HealthResult, owner: PortOwner | None) -> HealthResult:
    """A healthy answer that came from a stranger on the port is unhealthy, and says whose it was."""
    if owner is None or not owner.stranger:
        return answer
    return HealthResult(False, f"{owner.text}; the answer ({answer.detail}) is not the service's"[:300])


async def _bump_failures(session: AsyncSession, key: str) -> int:
    """``consecutive_failures += 1`` for ``key`` (created at 1), atomically; returns the new count."""
    dialect = session.get_bind().dialect.name
    insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = (
        insert(SyncCursor)
        .values(key=key, consecutive_failures=1, updated_at=utcnow())
        .on_conflict_do_update(
            index_elements=["key"],
            set_={"consecutive_failures": col(SyncCursor.consecutive_failures) + 1, "updated_at": utcnow()},
        )
        .returning(col(SyncCursor.consecutive_failures))
    )
    row = (await session.exec(stmt)).first()
    assert row is not None
    return int(row[0])


async def _reconcile(ctx: SyncContext, target: HealthTarget, result: HealthResult, summary: PassSummary) -> None:
    key = cursor_key(target.project_id)
    async with ctx.db.session() as s:
        if result.healthy:
            stmt = (
                update(SyncCursor)
                .where(col(SyncCursor.key) == key, col(SyncCursor.consecutive_failures) != 0)
                .values(consecutive_failures=0, updated_at=utcnow())
            )
            await s.exec(stmt)  # type: ignore[call-overload]
            if await resolve_incident(
                s, kind="service_unhealthy", subject_type="project", subject_id=target.project_id
            ):
                summary.updated += 1
                summary.notes.append(f"{target.project_name}: healthy again")
            return
        failures = await _bump_failures(s, key)
        if failures >= max(1, ctx.settings.sync_failure_threshold):
            await open_incident(
                s,
                kind="service_unhealthy",
                severity="critical",
                subject_type="project",
                subject_id=target.project_id,
                message=f"{target.project_name} failed {failures} health checks in a row: {result.detail}",
            )
            if failures == max(1, ctx.settings.sync_failure_threshold):
                summary.updated += 1
                summary.notes.append(f"{target.project_name}: unhealthy ({result.detail})")


async def run_pass(ctx: SyncContext) -> PassSummary:
    """Check the health of every active, deployed project and reconcile its failure count and incident.

    Args:
        ctx: settings and database.

    Returns:
        The pass summary (worker ``health_checker``): ``requests`` checks made, ``transient_failures`` unhealthy
        answers and checks that could not be made, ``updated`` incidents opened or resolved (listed in ``notes``);
        ``errors`` for an unreadable SSH key or known_hosts file or a database error on a project.
    """
    t0 = time.monotonic()
    summary = PassSummary(worker="health_checker")
    settings = ctx.settings
    targets = await _targets(ctx)
    options: asyncssh.SSHClientConnectionOptions | None = None
    if any(t.server.connection != "local" for t in targets):
        try:
            options = client_options(settings)
        except Exception as exc:  # noqa: BLE001 - a settings problem is ours, not the services'
            summary.errors.append(f"cannot check services on SSH servers: {describe_error(exc, 0)}")
            targets = [t for t in targets if t.server.connection == "local"]
    sem = asyncio.Semaphore(max(1, settings.ssh_concurrency))
    write_lock = asyncio.Lock()  # one writer at a time: short transactions, no pile-up on SQLite's write lock

    async def one(target: HealthTarget, http: httpx.AsyncClient) -> None:
        async with sem:
            result = await check_health(settings, target, http=http, options=options, breakers=ctx.breakers)
        summary.requests += 1
        if result.healthy is not True:
            summary.transient_failures += 1
        if result.healthy is None:
            summary.notes.append(f"{target.project_name}: health unknown ({result.detail})")
            return
        try:
            async with write_lock:
                await _reconcile(ctx, target, result, summary)
        except Exception as exc:  # noqa: BLE001 - one project's write must not stop the others
            summary.errors.append(f"{target.project_name}: could not record the check: {type(exc).__name__}: {exc}")

    limits = httpx.Limits(max_connections=max(1, settings.ssh_concurrency))
    async with httpx.AsyncClient(trust_env=False, limits=limits) as http:
        await asyncio.gather(*(one(t, http) for t in targets))
    summary.duration_s = time.monotonic() - t0
    return summary


__all__ = ["HealthResult", "HealthTarget", "check_health", "cursor_key", "curl_command", "run_pass"]
