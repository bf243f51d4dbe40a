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
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
from sqlalchemy import update
from sqlmodel import col, select

from core.settings import Settings
from models.enums import ServerStatus
from models.tables import Server, utcnow
from models.transitions import IllegalTransition, StaleStatus, transition_server
from services.incidents import find_open, open_incident, resolve_incident
from sync_workers.base import PassSummary, SyncContext

CHECK_COMMAND = "cat /proc/uptime /proc/loadavg; df -Pk /; grep MemAvailable /proc/meminfo"
"""The one command a check runs on an SSH host; :func:`parse_check_output` reads its output."""

_MAX_ERROR = 300


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one server check.

    Attributes:
        ok: whether the check ran and its output made sense.
        facts: on success ``uptime_s``, ``load`` ([1, 5, 15] min), ``disk_free_bytes`` (of ``/``),
            ``mem_available_bytes`` and ``checked_at`` (ISO 8601, UTC); empty on failure.
        error: a short description of the failure, None on success.
        duration_s: wall time of the check.
    """

    ok: bool
    facts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    duration_s: float = 0.0


def known_hosts_path(settings: Settings) -> Path:
    """The known_hosts file in force: ``settings.ssh_known_hosts``, else ``~/.ssh/known_hosts``."""
    return settings.ssh_known_hosts or Path("~/.ssh/known_hosts").expanduser()


def client_options(settings: Settings) -> asyncssh.SSHClientConnectionOptions:
    """Connection options shared by every SSH check of a pass: keys, known hosts and timeout, read once.

    The known-hosts policy is explicit: the file is loaded here and passed as an object, so neither a missing
    argument nor an ``UserKnownHostsFile none`` in ``~/.ssh/config`` can turn host key checking off (asyncssh
    disables it for ``known_hosts=None``).

    Args:
        settings: supplies ``ssh_key_path`` (else asyncssh's default keys and agent), ``ssh_known_hosts`` and
            ``ssh_timeout_s`` (the limit on TCP connect + SSH handshake + authentication).

    Returns:
        Options to pass to ``asyncssh.connect(..., options=...)``.

    Raises:
        OSError: the known_hosts file or the key file cannot be read.
        ValueError: and asyncssh's key import errors, for a malformed key or known_hosts file.
    """
    path = known_hosts_path(settings)
    if not path.is_file():
        raise FileNotFoundError(f"known_hosts file {path} not found: every host would be refused")
    kwargs: dict[str, Any] = {
        "known_hosts": asyncssh.read_known_hosts(str(path)),
        "connect_timeout": settings.ssh_timeout_s,
    }
    if settings.ssh_key_path is not None:
        kwargs["client_keys"] = [asyncssh.read_private_key(str(settings.ssh_key_path))]
    return asyncssh.SSHClientConnectionOptions(**kwargs)


async def ssh_run(
    settings: Settings,
    server: Server,
    command: str,
    *,
    options: asyncssh.SSHClientConnectionOptions | None = None,
    check: bool = True,
) -> asyncssh.SSHCompletedProcess:
    """Connect to ``server`` and run one command; the one SSH helper of server_sync and health_checker.

    Args:
        settings: SSH settings (see :func:`client_options`); ``ssh_timeout_s`` bounds the connection and, again,
            the command.
        server: supplies ``address``, ``ssh_port`` and ``ssh_user``.
        command: a shell command line.
        options: pre-built :func:`client_options` (a pass builds them once); built here if None.
        check: raise ``asyncssh.ProcessError`` on a non-zero exit status.

    Returns:
        The completed process (``exit_status``, ``stdout``, ``stderr`` as str).

    Raises:
        OSError: refused or unreachable. TimeoutError: no handshake in time. asyncssh.PermissionDenied,
        asyncssh.HostKeyNotVerifiable, asyncssh.TimeoutError, asyncssh.ProcessError and other ``asyncssh.Error``.
    """
    opts = options if options is not None else client_options(settings)
    async with asyncssh.connect(server.address, server.ssh_port, username=server.ssh_user, options=opts) as conn:
        return await conn.run(command, check=check, timeout=settings.ssh_timeout_s)


def describe_error(exc: BaseException, timeout_s: float) -> str:
    """A short, human text for a failed SSH or HTTP check (no traceback)."""
    if isinstance(exc, asyncssh.TimeoutError):
        text = f"command timed out after {timeout_s:g}s"
    elif isinstance(exc, asyncssh.ProcessError):
        detail = (str(exc.stderr or "") or str(exc.stdout or "")).strip()
        text = f"command failed (exit {exc.exit_status}){': ' + detail if detail else ''}"
    elif isinstance(exc, TimeoutError):
        text = f"no SSH handshake within {timeout_s:g}s"
    elif isinstance(exc, asyncssh.PermissionDenied):
        text = "authentication failed (key refused)"
    elif isinstance(exc, asyncssh.HostKeyNotVerifiable):
        text = f"host key not verifiable (not in known_hosts or changed): {exc.reason}"
    elif isinstance(exc, ConnectionRefusedError):
        text = "connection refused"
    elif isinstance(exc, asyncssh.DisconnectError):
        text = f"disconnected: {exc.reason}"
    elif isinstance(exc, OSError):
        text = f"{type(exc).__name__}: {exc.strerror or exc}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= _MAX_ERROR else text[:_MAX_ERROR] + "..."


def parse_check_output(text: str) -> dict[str, Any]:
    """Read the output of :data:`CHECK_COMMAND` into facts (without ``checked_at``).

    Raises:
        ValueError: the output is not what the command prints on Linux.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    try:
        uptime_s = float(lines[0].split()[0])
        load = [float(x) for x in lines[1].split()[:3]]
        df_header = next(i for i, line in enumerate(lines) if line.startswith("Filesystem"))
        disk_free_kb = int(lines[df_header + 1].split()[-3])
        mem_line = next(line for line in lines if line.startswith("MemAvailable:"))
        mem_kb = int(mem_line.split()[1])
    except (IndexError, ValueError, StopIteration) as exc:
        raise ValueError(f"unexpected check output: {text[:120]!r}") from exc
    if len(load) != 3:
        raise ValueError(f"unexpected load line: {lines[1]!r}")
    return {
        "uptime_s": uptime_s,
        "load": load,
        "disk_free_bytes": disk_free_kb * 1024,
        "mem_available_bytes": mem_kb * 1024,
    }


def local_facts() -> dict[str, Any]:
    """The same facts as :data:`CHECK_COMMAND` gives, read on this machine (``/proc`` and ``statvfs``)."""
    uptime_s = float(Path("/proc/uptime").read_text().split()[0])
    load = [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    mem_line = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemAvailable:"))
    st = os.statvfs("/")
    return {
        "uptime_s": uptime_s,
        "load": load,
        "disk_free_bytes": st.f_bavail * st.f_frsize,
        "mem_available_bytes": int(mem_line.split()[1]) * 1024,
    }


def overall_timeout(settings: Settings) -> float:
    """The limit on one whole check: connecting, then the command, each bounded by ``ssh_timeout_s``."""
    return 2 * settings.ssh_timeout_s + 1.0


async def check_server(
    settings: Settings, server: Server, *, options: asyncssh.SSHClientConnectionOptions | None = None
) -> CheckResult:
    """Check one server; every failure is a result (ok=False, short error), never an exception.

    Args:
        settings: SSH settings (see :func:`client_options`).
        server: the server; connection ``local`` is checked here without SSH, anything else over SSH with
            :data:`CHECK_COMMAND`.
        options: pre-built :func:`client_options`, shared by the checks of a pass; built here if None.

    Returns:
        The :class:`CheckResult`, within :func:`overall_timeout` seconds.
    """
    t0 = time.monotonic()
    limit = overall_timeout(settings)
    deadline = asyncio.timeout(limit)
    try:
        async with deadline:
            if server.connection == "local":
                facts = await asyncio.to_thread(local_facts)
            else:
                done = await ssh_run(settings, server, CHECK_COMMAND, options=options)
                facts = parse_check_output(str(done.stdout or ""))
    except Exception as exc:  # noqa: BLE001 - the contract: a failed check is a result
        if deadline.expired():
            error = f"check took longer than {limit:g}s"
        else:
            error = describe_error(exc, settings.ssh_timeout_s)
        return CheckResult(ok=False, error=error, duration_s=time.monotonic() - t0)
    facts["checked_at"] = utcnow().isoformat()
    return CheckResult(ok=True, facts=facts, duration_s=time.monotonic() - t0)


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
                await transition_server(s, server_id, ServerStatus.ready, reason=f"check ok {_facts_line(result)}")
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
            await transition_server(s, server_id, ServerStatus.error, reason=why)
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
            result = await check_server(settings, server, options=options)
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


__all__ = [
    "CHECK_COMMAND",
    "CheckResult",
    "check_server",
    "client_options",
    "describe_error",
    "known_hosts_path",
    "overall_timeout",
    "parse_check_output",
    "run_pass",
    "ssh_run",
]
