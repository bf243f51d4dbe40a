"""Servers and port leases on a real SQLite file: the database decides who wins a port, across tasks and processes."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from sqlalchemy import func
from sqlmodel import select

from core.db import Database
from core.settings import Settings
from models.enums import ProjectStatus, ServerStatus
from models.tables import Event, PortLease, Project, Server
from models.transitions import transition_server
from services.leases import ensure_default_server, find_ready_server, lease_port

REPO_ROOT = Path(__file__).resolve().parents[2]


async def make_projects(db: Database, count: int, prefix: str = "proj") -> list[int]:
    async with db.session() as s:
        rows = [Project(name=f"{prefix}-{i:02d}", status=ProjectStatus.draft) for i in range(count)]
        s.add_all(rows)
        await s.flush()
        return [p.id for p in rows if p.id is not None]


async def default_server(db: Database, settings: Settings) -> Server:
    await ensure_default_server(db, settings)
    async with db.session() as s:
        server = (await s.exec(select(Server).where(Server.name == "localhost"))).one()
    return server


async def leases(db: Database) -> list[tuple[int, int, int]]:
    async with db.session() as s:
        rows = (await s.exec(select(PortLease))).all()
    return [(r.server_id, r.port, r.project_id) for r in rows]


async def test_default_server_is_registered_once(db: Database, settings: Settings) -> None:
    await ensure_default_server(db, settings)
    await ensure_default_server(db, settings)
    async with db.session() as s:
        servers = (await s.exec(select(Server))).all()
        events = (await s.exec(select(Event).where(Event.subject_type == "server"))).all()
    assert [(x.name, x.connection, x.status) for x in servers] == [("localhost", "local", ServerStatus.ready)]
    assert (servers[0].port_range_start, servers[0].port_range_end) == (
        settings.port_range_start,
        settings.port_range_end,
    )
    assert [(e.from_status, e.to_status) for e in events] == [("discovered", "ready")]


async def test_no_default_server_when_disabled(db: Database, settings: Settings) -> None:
    await ensure_default_server(db, settings.model_copy(update={"register_localhost": False}))
    assert await find_ready_server(db) is None


async def test_lease_is_idempotent_and_recorded_on_project(db: Database, settings: Settings) -> None:
    server = await default_server(db, settings)
    [pid] = await make_projects(db, 1)
    first = await lease_port(db, project_id=pid, server=server)
    assert first is not None and settings.port_range_start <= first <= settings.port_range_end
    assert await lease_port(db, project_id=pid, server=server) == first
    assert await leases(db) == [(server.id, first, pid)]
    async with db.session() as s:
        project = await s.get(Project, pid)
    assert project is not None and (project.server_id, project.port) == (server.id, first)


async def test_concurrent_leases_never_share_a_port(db: Database, settings: Settings) -> None:
    start = settings.port_range_start
    server = await default_server(db, settings.model_copy(update={"port_range_end": start + 9}))
    pids = await make_projects(db, 15)
    ports = await asyncio.gather(*(lease_port(db, project_id=p, server=server) for p in pids))
    got = [p for p in ports if p is not None]
    assert len(got) == 10 and ports.count(None) == 5
    assert sorted(got) == list(range(start, start + 10))
    rows = await leases(db)
    assert len(rows) == 10 and len({(srv, port) for srv, port, _ in rows}) == 10
    assert {port for _, port, _ in rows} == set(got)


async def test_port_in_use_is_skipped_on_local_server(db: Database, settings: Settings) -> None:
    server = await default_server(db, settings)
    [pid] = await make_projects(db, 1)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", settings.port_range_start))
        busy.listen()
        port = await lease_port(db, project_id=pid, server=server)
    assert port == settings.port_range_start + 1


async def test_find_ready_server_none_when_full(db: Database, settings: Settings) -> None:
    one_port = settings.model_copy(update={"port_range_end": settings.port_range_start})
    server = await default_server(db, one_port)
    found = await find_ready_server(db)
    assert found is not None and found.id == server.id
    first, second = await make_projects(db, 2)
    assert await lease_port(db, project_id=first, server=server) == settings.port_range_start
    assert await find_ready_server(db) is None
    assert await lease_port(db, project_id=second, server=server) is None


async def test_find_ready_server_none_when_not_ready(db: Database, settings: Settings) -> None:
    server = await default_server(db, settings)
    assert server.id is not None
    async with db.session() as s:
        await transition_server(s, server.id, ServerStatus.error, reason="unreachable")
    assert await find_ready_server(db) is None
    async with db.session() as s:
        await transition_server(s, server.id, ServerStatus.ready, reason="back")
    found = await find_ready_server(db)
    assert found is not None and found.id == server.id


RACE_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from sqlmodel import select
    from core.db import Database
    from services.leases import lease_port
    from models.tables import Server

    async def main(url, ids):
        db = Database(url)
        async with db.session() as s:
            server = (await s.exec(select(Server).where(Server.name == "race-box"))).one()
        ports = await asyncio.gather(*(lease_port(db, project_id=i, server=server) for i in ids))
        await db.dispose()
        print(json.dumps(ports))

    asyncio.run(main(sys.argv[1], [int(x) for x in sys.argv[2].split(",")]))
    """
)


async def test_two_processes_never_share_a_port(db: Database, settings: Settings) -> None:
    async with db.session() as s:
        server = Server(
            name="race-box",
            address="10.0.0.9",
            connection="ssh",
            status=ServerStatus.ready,
            port_range_start=20000,
            port_range_end=20029,
        )
        s.add(server)
    pids = await make_projects(db, 20, prefix="race")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACE_SCRIPT, settings.db_url, ",".join(map(str, chunk))],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for chunk in (pids[:10], pids[10:])
    ]
    outs = [await asyncio.to_thread(p.communicate, timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    rows = await leases(db)
    assert len(rows) == 20
    assert len({(srv, port) for srv, port, _ in rows}) == 20
    assert sorted(pid for _, _, pid in rows) == sorted(pids)
    assert all(20000 <= port <= 20029 for _, port, _ in rows)
    async with db.session() as s:
        assert (await s.exec(select(func.count()).select_from(Project).where(Project.port.is_not(None)))).one() == 20
