"""provisioner_trigger: provision servers that wait for it, then wake the projects that waited for a server.

One pass does two things, in this order (so a server provisioned in this pass already serves the waiting projects):

(a) every server in status ``provisioning`` gets ``playbooks/provision.yml`` run through ansible-runner (off the
    event loop, by :func:`services.servers.provision_server`); success → ``ready`` (the Event's reason carries
    Ansible's summary) and the ``provision_failed`` incident, if any, resolved; failure → ``error`` and a critical
    ``provision_failed`` incident with Ansible's summary. One server's failure never stops the others.
(b) while a ready server with a free port exists, every graph thread parked at a ``waiting_for_resources`` interrupt
    is resumed with the answer "server NAME is ready" through :class:`runtime.threads.OrchestratorRuntime` (which
    checks that the thread exists and the interrupt is pending before resuming, see STACK_FACTS). The PO's
    ``wait_for_resources`` node then says "Retrying resources: server NAME is ready." in the thread's conversation and
    asks Zavhoz again. A thread whose resume raises is recorded in ``summary.errors``; the others still run.

The runtime (graph compile + checkpoint saver) is opened only when there is a ready server and no runtime was given.
"""

from __future__ import annotations

import logging
import time

from sqlmodel import col, select

from models.enums import AccessRole, ServerStatus
from models.tables import Server
from runtime.threads import Answer, OrchestratorRuntime
from services.identities import Identity
from services.leases import find_ready_server
from services.servers import provision_server
from sync_workers.base import PassSummary, SyncContext

WORKER = "provisioner_trigger"
IDENTITY = Identity(name=f"system:{WORKER}", role=AccessRole.approver)
"""Who resumes the waiting threads, as the trail names it: it acts on every thread (an approver sees them all), and
only ever answers resource waits."""
log = logging.getLogger(__name__)


async def run_pass(ctx: SyncContext, runtime: OrchestratorRuntime | None = None) -> PassSummary:
    """One pass: provision the ``provisioning`` servers, then resume threads waiting for resources.

    Args:
        ctx: the sync context (settings, database).
        runtime: an open runtime to resume threads with; None opens one for this pass when a thread may be resumed.

    Returns:
        The pass summary: ``updated`` counts servers moved by provisioning, ``resumed`` the threads resumed.
    """
    started = time.perf_counter()
    summary = PassSummary(worker=WORKER)
    await _provision_servers(ctx, summary)
    await _resume_waiting(ctx, runtime, summary)
    summary.duration_s = time.perf_counter() - started
    return summary


async def _provision_servers(ctx: SyncContext, summary: PassSummary) -> None:
    async with ctx.db.session() as s:
        servers = (
            await s.exec(select(Server).where(Server.status == ServerStatus.provisioning).order_by(col(Server.id)))
        ).all()
    for server in servers:
        assert server.id is not None
        try:
            await _provision(ctx, server, summary)
        except Exception as exc:  # a bug or a database error for this server; the others still get provisioned
            log.exception("provisioning server %s failed", server.name)
            summary.errors.append(f"server {server.name}: {type(exc).__name__}: {exc}")


async def _provision(ctx: SyncContext, server: Server, summary: PassSummary) -> None:
    result = await provision_server(ctx.settings, ctx.db, server, actor=IDENTITY.name)
    summary.updated += 1
    if result.ok:
        summary.notes.append(f"server {server.name} provisioned and ready")
    else:
        # Ansible's failure is the server's state (status error + incident, recorded by the service), not a
        # worker error.
        summary.transient_failures += 1
        summary.notes.append(f"server {server.name} failed provisioning: {result.summary.splitlines()[0]}")


async def _resume_waiting(ctx: SyncContext, runtime: OrchestratorRuntime | None, summary: PassSummary) -> None:
    if await find_ready_server(ctx.db) is None:
        return  # nothing can be met; do not even open the runtime
    if runtime is not None:
        await _resume_with(ctx, runtime, summary)
        return
    async with OrchestratorRuntime(ctx.settings) as rt:
        await _resume_with(ctx, rt, summary)


async def _resume_with(ctx: SyncContext, rt: OrchestratorRuntime, summary: PassSummary) -> None:
    waiting = [
        (view.id, p.id)
        for view in await rt.threads()
        for p in view.pending
        if p.payload.get("kind") == "waiting_for_resources"
    ]
    for thread_id, interrupt_id in waiting:
        # Re-checked per thread: the previous resume may have leased the last free port.
        server = await find_ready_server(ctx.db)
        if server is None:
            summary.notes.append("no ready server with a free port left; the other waiting threads keep waiting")
            return
        try:
            async for _ev in rt.resume(
                thread_id, Answer("text", f"server {server.name} is ready"), interrupt_id, actor=IDENTITY
            ):
                pass
        except Exception as exc:
            log.exception("resuming thread %s failed", thread_id)
            summary.errors.append(f"thread {thread_id}: {type(exc).__name__}: {exc}")
            continue
        summary.resumed += 1
        summary.notes.append(f"thread {thread_id} resumed: server {server.name} is ready")
