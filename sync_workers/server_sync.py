"""server_sync: check every server (uptime, load, free disk and memory) and reconcile its status with the result.

A server with connection ``local`` (this machine) is checked by reading ``/proc`` here, without SSH; any other
over asyncssh with key authentication and an explicit known-hosts policy (``settings.ssh_known_hosts``, else
``~/.ssh/known_hosts``; a host not in it is refused, never trusted on first use). Checks run concurrently, at most
``settings.ssh_concurrency`` at once, each bounded in time, so a pass over many servers takes about the time of a
few checks and a host that hangs delays nobody else.

Reconciliation (one short transaction per server, atomic UPDATEs, status moves only through
:func:`models.transitions.transition_server`):

* good check: facts and ``last_seen_at`` stored, ``fail_count`` reset; ``discovered``/``error`` -> ``ready``; the
  open ``server_down`` incident is resolved. A server in ``error`` because its provisioning failed (an open
  ``provision_failed`` incident) stays in ``error``: answering SSH does not make it provisioned.
* failed check: ``fail_count = fail_count + 1``; a ``ready`` server moves to ``error`` with a critical ``server_down``
  incident once the count reaches ``settings.sync_failure_threshold``. A ``discovered`` server that fails stays
  ``discovered`` (it never worked, so it is not "down").
* servers in ``provisioning`` are skipped: the provisioner owns them.

Every SSH check goes through the host's circuit breaker (``ssh:<address>:<port>``, :mod:`core.breakers`, shared by
every process through the database): after ``settings.breaker_failures`` unreachable checks in a row the host is
refused at once until ``settings.breaker_cooldown_s`` has passed. A refused check is a failed check like any other
(its error says "SSH host A:P unavailable since ..., next try at ..."), so the failure count and ``server_down``
go on as before.
"""

from __future__ import annotations

import asyncio
import time

import asyncssh
from sqlalchemy import update
from sqlmodel import col, select

from infra.ssh import client_options, describe_error
from models.enums import ServerStatus
from models.tables import Server, utcnow
from models.transitions import IllegalTransition, StaleStatus, transition_server
from services.incidents import find_open, open_incident, resolve_incident
from services.servers import CheckResult, check_server
from sync_workers.base import PassSummary, SyncContext

ACTOR = "system:server_sync"
"""How the trail names this worker's changes."""


async def _reconcile(ctx: SyncContext, server_id: int, name: str, result: CheckResult, summary: PassSummary) -> None:
    threshold = max(1, ctx.settings.sync_failure_threshold)
    async with ctx.db.session() as s:
        if result.ok:
            stmt = (
                update(Server)
                .where(col(Server.id) == server_id, col(Server.status) != ServerStatus.provisioning)
                .values(facts=result.facts, last_seen_at=utcnow(), fail_count=0)
                .returning(col(Server.status))
            )
            row = (await s.exec(stmt)).first()  # type: ignore[call-overload]
            if row is None:
                return  # gone, or taken by the provisioner meanwhile
            frm = ServerStatus(row[0])
            if frm == ServerStatus.error and await find_open(
                s, kind="provision_failed", subject_type="server", subject_id=server_id
            ):
                summary.notes.append(f"{name}: answers, but stays in error: its provisioning failed")
            elif frm in (ServerStatus.discovered, ServerStatus.error):
                await transition_server(
                    s, server_id, ServerStatus.ready, reason=f"check ok {_facts_line(result)}", actor=ACTOR
                )
                summary.updated += 1
                summary.notes.append(f"{name}: {frm.value} -> ready")
            await resolve_incident(s, kind="server_down", subject_type="server", subject_id=server_id)
            return
        summary.transient_failures += 1
        bump = (
            update(Server)
            .where(col(Server.id) == server_id, col(Server.status) != ServerStatus.provisioning)
            .values(fail_count=col(Server.fail_count) + 1)
            .returning(col(Server.fail_count), col(Server.status))
        )
        row = (await s.exec(bump)).first()  # type: ignore[call-overload]
        if row is None:
            return
        fail_count, status = int(row[0]), ServerStatus(row[1])
        summary.notes.append(f"{name}: check failed ({fail_count} in a row): {result.error}")
        if status == ServerStatus.ready and fail_count >= threshold:
            why = f"{fail_count} failed checks in a row, last: {result.error}"
            await transition_server(s, server_id, ServerStatus.error, reason=why, actor=ACTOR)
            await open_incident(
                s,
                kind="server_down",
                severity="critical",
                subject_type="server",
                subject_id=server_id,
                message=f"server {name} failed {fail_count} checks in a row: {result.error}",
            )
            summary.updated += 1
            summary.notes.append(f"{name}: ready -> error ({result.error})")


def _facts_line(result: CheckResult) -> str:
    f = result.facts
    return (
        f"(up {f['uptime_s'] / 3600:.1f} h, load {f['load'][0]:.2f}, disk free {f['disk_free_bytes'] >> 30} GiB, "
        f"mem available {f['mem_available_bytes'] >> 20} MiB)"
    )


async def run_pass(ctx: SyncContext) -> PassSummary:
    """Check every server not in ``provisioning`` and reconcile the database with what the checks found.

    Args:
        ctx: settings and database.

    Returns:
        The pass summary (worker ``server_sync``): ``requests`` checks made, ``transient_failures`` failed
        checks, ``updated`` status changes (listed in ``notes``). ``errors`` holds what stopped the pass doing its
        job: an unreadable key or known_hosts file (the SSH servers are then left untouched, not counted as
        failing), or a database error on a server.
    """
    t0 = time.monotonic()
    summary = PassSummary(worker="server_sync")
    settings = ctx.settings
    async with ctx.db.session() as s:
        query = select(Server).where(col(Server.status) != ServerStatus.provisioning).order_by(col(Server.id))
        servers = list((await s.exec(query)).all())
    options: asyncssh.SSHClientConnectionOptions | None = None
    if any(sv.connection != "local" for sv in servers):
        try:
            options = client_options(settings)
        except Exception as exc:  # noqa: BLE001 - a settings problem is ours, not the servers'
            summary.errors.append(f"cannot check SSH servers: {describe_error(exc, settings.ssh_timeout_s)}")
            servers = [sv for sv in servers if sv.connection == "local"]
    sem = asyncio.Semaphore(max(1, settings.ssh_concurrency))
    write_lock = asyncio.Lock()  # one writer at a time: short transactions, no pile-up on SQLite's write lock

    async def one(server: Server) -> None:
        assert server.id is not None
        async with sem:
            result = await check_server(settings, server, options=options, breakers=ctx.breakers)
        summary.requests += 1
        try:
            async with write_lock:
                await _reconcile(ctx, server.id, server.name, result, summary)
        except (StaleStatus, IllegalTransition) as exc:
            summary.notes.append(f"{server.name}: status changed meanwhile, left for the next pass ({exc})")
        except Exception as exc:  # noqa: BLE001 - one server's write must not stop the others
            summary.errors.append(f"{server.name}: could not record the check: {type(exc).__name__}: {exc}")

    await asyncio.gather(*(one(sv) for sv in servers))
    summary.duration_s = time.monotonic() - t0
    return summary
