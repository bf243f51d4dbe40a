"""Servers and port leases: the data Zavhoz works on.

A lease is a row with unique ``(server_id, port)`` and unique ``project_id``; the database, not a read-then-write,
decides who wins a port, so no two projects ever share one, across threads and processes.
"""

from __future__ import annotations

import socket

from sqlalchemy import delete, func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.db import Database
from core.settings import Settings
from models.enums import ServerStatus
from models.tables import PortLease, Project, Server
from models.transitions import transition_server
from services.identities import record


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on ``host:port`` right now (a bind test)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


async def ensure_default_server(db: Database, settings: Settings) -> None:
    """Register this machine as the ready server ``localhost`` (connection ``local``) once, if enabled."""
    if not settings.register_localhost:
        return
    async with db.session() as s:
        if (await s.exec(select(Server).where(Server.name == "localhost"))).first():
            return
    try:
        async with db.session() as s:
            server = Server(
                name="localhost",
                address="127.0.0.1",
                connection="local",
                status=ServerStatus.discovered,
                port_range_start=settings.port_range_start,
                port_range_end=settings.port_range_end,
            )
            s.add(server)
            await s.flush()
            assert server.id is not None
            await transition_server(
                s, server.id, ServerStatus.ready, reason="embedded default: this machine", actor="system:startup"
            )
    except IntegrityError:
        return  # another process registered it first


async def find_ready_server(db: Database) -> Server | None:
    """The first ready server with at least one port of its range not leased, or None."""
    async with db.session() as s:
        ready = select(Server).where(Server.status == ServerStatus.ready).order_by(col(Server.id))
        servers = (await s.exec(ready)).all()
        for server in servers:
            used = (await s.exec(select(func.count()).where(PortLease.server_id == server.id))).one()
            if used < server.port_range_end - server.port_range_start + 1:
                return server
    return None


async def existing_lease(db: Database, project_id: int) -> PortLease | None:
    """The project's lease, if it holds one."""
    async with db.session() as s:
        return (await s.exec(select(PortLease).where(PortLease.project_id == project_id))).first()


async def lease_port(db: Database, *, project_id: int, server: Server) -> int | None:
    """Lease a free port of ``server``'s range to the project and record it on the project.

    Idempotent: a project that holds a lease gets the same port back. On a ``local`` server, ports something
    already listens on are skipped. Leasing is serialized within a process (``db.lease_lock``); a race lost to
    another process (unique key violation) re-reads the taken ports and tries again.

    Returns:
        The port, or None when the range is exhausted.
    """
    assert server.id is not None
    async with db.lease_lock:
        for _attempt in range(server.port_range_end - server.port_range_start + 1):
            held = await existing_lease(db, project_id)
            if held is not None:
                return held.port
            port = await _first_free_port(db, server)
            if port is None:
                return None
            try:
                async with db.session() as s:
                    s.add(PortLease(server_id=server.id, port=port, project_id=project_id))
                    await s.flush()
                    stmt = update(Project).where(Project.id == project_id).values(server_id=server.id, port=port)  # type: ignore[arg-type]
                    await s.exec(stmt)  # type: ignore[call-overload]
                return port
            except IntegrityError:
                continue  # another process took this port (or leased for this project): re-read and retry
    return None


async def _first_free_port(db: Database, server: Server) -> int | None:
    async with db.session() as s:
        taken = set((await s.exec(select(PortLease.port).where(PortLease.server_id == server.id))).all())
    for port in range(server.port_range_start, server.port_range_end + 1):
        if port not in taken and (server.connection != "local" or port_is_free(port)):
            return port
    return None


async def release_leases(
    session: AsyncSession, project_id: int, *, why: str, actor: str, thread_id: str | None = None
) -> list[PortLease]:
    """Release every port lease of the project, in the caller's transaction, each on the trail (``lease_released``).

    The project's ``server_id`` and ``port`` are cleared with them. Returns the leases released (empty: it held
    none).
    """
    released = list((await session.exec(select(PortLease).where(col(PortLease.project_id) == project_id))).all())
    await session.exec(delete(PortLease).where(col(PortLease.project_id) == project_id))  # type: ignore[call-overload]
    await session.exec(  # type: ignore[call-overload]
        update(Project).where(col(Project.id) == project_id).values(server_id=None, port=None)
    )
    for lease in released:
        await record(
            session,
            subject_type="project",
            subject_id=project_id,
            action="lease_released",
            reason=f"port {lease.port} on server {lease.server_id}: {why}",
            actor=actor,
            thread_id=thread_id,
        )
    return released
