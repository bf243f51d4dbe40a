"""server_sync and health_checker against real sockets on 127.0.0.1: an in-process SSH host, refusing and hanging
hosts, and a tiny HTTP service. No mocks of asyncssh or httpx."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from sqlmodel import col, select

from core.db import Database
from core.settings import Settings
from models import (
    Deployment,
    DeploymentStatus,
    Event,
    Incident,
    Project,
    ProjectStatus,
    Server,
    ServerStatus,
    SyncCursor,
)
from services.leases import ensure_default_server
from services.servers import CHECK_COMMAND, check_server
from sync_workers import health_checker, server_sync
from sync_workers.base import SyncContext
from tests.fixtures.ssh_server import EXPECTED_FACTS, FakeSSHHost, hanging_host, refusing_port

THRESHOLD = 3


@pytest.fixture()
async def host(tmp_path: Path) -> AsyncIterator[FakeSSHHost]:
    async with FakeSSHHost(tmp_path / "ssh") as h:
        yield h


@pytest.fixture()
def cfg(settings: Settings, host: FakeSSHHost) -> Settings:
    return settings.model_copy(
        update={
            **host.settings_update(),
            "ssh_timeout_s": 1.0,
            "sync_failure_threshold": THRESHOLD,
            "register_localhost": False,
        }
    )


@pytest.fixture()
async def ctx(cfg: Settings) -> AsyncIterator[SyncContext]:
    cfg.ensure_data_dir()
    db = Database(cfg.db_url)
    await db.migrate()
    yield SyncContext(settings=cfg, db=db)
    await db.dispose()


async def add_server(
    ctx: SyncContext, name: str, port: int, status: ServerStatus = ServerStatus.discovered, **extra: Any
) -> int:
    async with ctx.db.session() as s:
        server = Server(name=name, address="127.0.0.1", ssh_port=port, status=status, **extra)
        s.add(server)
        await s.flush()
        assert server.id is not None
        return server.id


async def get_server(ctx: SyncContext, server_id: int) -> Server:
    async with ctx.db.session() as s:
        server = await s.get(Server, server_id)
        assert server is not None
        return server


async def incidents(ctx: SyncContext, kind: str) -> list[Incident]:
    async with ctx.db.session() as s:
        return list((await s.exec(select(Incident).where(Incident.kind == kind).order_by(col(Incident.id)))).all())


async def set_port(ctx: SyncContext, server_id: int, port: int) -> None:
    async with ctx.db.session() as s:
        server = await s.get(Server, server_id)
        assert server is not None
        server.ssh_port = port
        s.add(server)


# ---------------------------------------------------------------- server_sync


async def test_discovered_becomes_ready_with_facts(ctx: SyncContext, host: FakeSSHHost) -> None:
    sid = await add_server(ctx, "s1", host.port)
    summary = await server_sync.run_pass(ctx)
    assert summary.ok, summary.errors
    assert (summary.requests, summary.updated, summary.transient_failures) == (1, 1, 0)
    server = await get_server(ctx, sid)
    assert server.status == ServerStatus.ready
    assert server.facts is not None
    assert {k: server.facts[k] for k in EXPECTED_FACTS} == EXPECTED_FACTS
    assert server.facts["checked_at"]
    assert server.last_seen_at is not None and server.fail_count == 0
    assert host.commands == [CHECK_COMMAND]
    async with ctx.db.session() as s:
        events = (await s.exec(select(Event).where(Event.subject_type == "server"))).all()
    assert [(e.from_status, e.to_status) for e in events] == [("discovered", "ready")]


async def test_ready_goes_to_error_after_n_failures_and_recovers(ctx: SyncContext, host: FakeSSHHost) -> None:
    sid = await add_server(ctx, "s1", refusing_port(), ServerStatus.ready)
    for n in range(1, THRESHOLD):
        summary = await server_sync.run_pass(ctx)
        assert summary.ok and summary.transient_failures == 1
        server = await get_server(ctx, sid)
        assert (server.status, server.fail_count) == (ServerStatus.ready, n)
        assert await incidents(ctx, "server_down") == []
    for n in (THRESHOLD, THRESHOLD + 1):  # reaching N moves it; one more failure opens nothing new
        await server_sync.run_pass(ctx)
        server = await get_server(ctx, sid)
        assert (server.status, server.fail_count) == (ServerStatus.error, n)
    down = await incidents(ctx, "server_down")
    assert len(down) == 1
    assert (down[0].severity, down[0].subject_type, down[0].subject_id) == ("critical", "server", sid)
    assert down[0].resolved_at is None and "refused" in down[0].message

    await set_port(ctx, sid, host.port)
    summary = await server_sync.run_pass(ctx)
    assert summary.ok and summary.transient_failures == 0
    server = await get_server(ctx, sid)
    assert (server.status, server.fail_count) == (ServerStatus.ready, 0)
    (down,) = await incidents(ctx, "server_down")
    assert down.resolved_at is not None


async def test_discovered_server_that_fails_stays_discovered(ctx: SyncContext) -> None:
    sid = await add_server(ctx, "s1", refusing_port())
    for _ in range(THRESHOLD + 1):
        await server_sync.run_pass(ctx)
    server = await get_server(ctx, sid)
    assert (server.status, server.fail_count) == (ServerStatus.discovered, THRESHOLD + 1)
    assert await incidents(ctx, "server_down") == []


async def test_provisioning_servers_are_left_to_the_provisioner(ctx: SyncContext, host: FakeSSHHost) -> None:
    sid = await add_server(ctx, "s1", host.port, ServerStatus.provisioning)
    summary = await server_sync.run_pass(ctx)
    assert summary.requests == 0 and host.commands == []
    assert (await get_server(ctx, sid)).status == ServerStatus.provisioning


async def test_wrong_client_key_is_a_failure_not_an_exception(cfg: Settings, host: FakeSSHHost) -> None:
    server = Server(name="s", address="127.0.0.1", ssh_port=host.port, status=ServerStatus.ready)
    result = await check_server(cfg.model_copy(update={"ssh_key_path": host.wrong_key}), server)
    assert not result.ok and result.facts == {}
    assert result.error is not None and "authentication failed" in result.error


async def test_unknown_host_key_is_a_failure_not_an_exception(cfg: Settings, host: FakeSSHHost, tmp_path: Path) -> None:
    other = FakeSSHHost(tmp_path / "other")  # a known_hosts naming the same [127.0.0.1]:port with another key
    other.port = host.port
    stranger = tmp_path / "known_hosts_other"
    stranger.write_text(other.known_hosts_line() + "\n")
    empty = tmp_path / "known_hosts_empty"
    empty.write_text("")
    server = Server(name="s", address="127.0.0.1", ssh_port=host.port, status=ServerStatus.ready)
    for known in (stranger, empty):
        result = await check_server(cfg.model_copy(update={"ssh_known_hosts": known}), server)
        assert not result.ok
        assert result.error is not None and "host key not verifiable" in result.error
    missing = await check_server(cfg.model_copy(update={"ssh_known_hosts": tmp_path / "nope"}), server)
    assert not missing.ok and missing.error is not None and "not found" in missing.error
    assert host.commands == []  # nothing ran on a host we could not verify


async def test_command_failure_and_command_timeout_are_failures(cfg: Settings, host: FakeSSHHost) -> None:
    server = Server(name="s", address="127.0.0.1", ssh_port=host.port, status=ServerStatus.ready)
    host.check_exit = 1
    result = await check_server(cfg, server)
    assert not result.ok and result.error is not None and "exit 1" in result.error
    host.check_exit, host.check_output = 0, "garbage\n"
    result = await check_server(cfg, server)
    assert not result.ok and result.error is not None and "unexpected" in result.error
    host.check_output, host.delay_s = "", 5.0
    t0 = time.monotonic()
    result = await check_server(cfg, server)
    assert not result.ok and result.error is not None and "timed out" in result.error
    assert time.monotonic() - t0 < 2.5


async def test_refusing_and_hanging_hosts_fail_in_one_timeout_without_delaying_others(
    ctx: SyncContext, host: FakeSSHHost
) -> None:
    async with hanging_host() as hang:
        good = await add_server(ctx, "good", host.port)
        hung = await add_server(ctx, "hanging", hang.port)
        refused = await add_server(ctx, "refusing", refusing_port())
        t0 = time.monotonic()
        summary = await server_sync.run_pass(ctx)
        took = time.monotonic() - t0
    assert 0.9 <= took < 2.0, f"one pass took {took:.2f}s; timeout is 1 s, three in a row would be 3 s"
    assert summary.ok and summary.requests == 3 and summary.transient_failures == 2
    assert (await get_server(ctx, good)).status == ServerStatus.ready
    for sid in (hung, refused):
        server = await get_server(ctx, sid)
        assert (server.status, server.fail_count) == (ServerStatus.discovered, 1)


async def test_local_server_is_checked_without_ssh(
    ctx: SyncContext, host: FakeSSHHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_ssh(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a local server must not be checked over SSH")

    monkeypatch.setattr(asyncssh, "connect", no_ssh)
    await ensure_default_server(ctx.db, ctx.settings.model_copy(update={"register_localhost": True}))
    local2 = await add_server(ctx, "this-box", 1, connection="local")  # port 1: nothing listens, must not matter
    summary = await server_sync.run_pass(ctx)
    assert summary.ok and summary.transient_failures == 0, summary.notes
    async with ctx.db.session() as s:
        servers = (await s.exec(select(Server))).all()
    assert {sv.name for sv in servers} == {"localhost", "this-box"}
    for server in servers:
        assert server.status == ServerStatus.ready and server.facts is not None
        assert server.facts["mem_available_bytes"] > 0 and server.facts["disk_free_bytes"] > 0
        assert server.facts["uptime_s"] > 0 and len(server.facts["load"]) == 3
    assert (await get_server(ctx, local2)).last_seen_at is not None
    assert host.commands == []


async def test_concurrency_is_bounded(ctx: SyncContext) -> None:
    # 20 servers at one address and port are one host to its circuit breaker: keep it closed for this test
    cfg = ctx.settings.model_copy(update={"ssh_concurrency": 5, "ssh_timeout_s": 1.0, "breaker_failures": 100})
    ctx = SyncContext(settings=cfg, db=ctx.db)
    async with hanging_host() as hang:
        for i in range(20):
            await add_server(ctx, f"h{i:02d}", hang.port)
        t0 = time.monotonic()
        summary = await server_sync.run_pass(ctx)
        took = time.monotonic() - t0
        for _ in range(100):  # a connection the kernel completed may still wait in the listen backlog for this loop
            if hang.accepted >= 20:
                break
            await asyncio.sleep(0.05)
        accepted, peak = hang.accepted, hang.peak
    assert summary.requests == 20 and summary.transient_failures == 20
    # On a loaded machine a check can time out before its connection is accepted (the host and the checks share
    # this event loop), so not all 20 need to arrive; enough must for the peak to mean something.
    assert 10 <= accepted <= 20, accepted
    assert peak <= 6, f"{peak} connections at once with ssh_concurrency=5"
    assert 3.0 <= took <= 16.0, f"20 hanging hosts, 5 at a time, 1 s each: {took:.2f}s (expected ~4 s)"


async def test_failed_provisioning_is_not_undone_by_a_good_check(ctx: SyncContext, host: FakeSSHHost) -> None:
    sid = await add_server(ctx, "s1", host.port, ServerStatus.error)
    async with ctx.db.session() as s:
        s.add(
            Incident(kind="provision_failed", severity="critical", subject_type="server", subject_id=sid, message="x")
        )
    summary = await server_sync.run_pass(ctx)
    assert summary.ok and summary.transient_failures == 0
    server = await get_server(ctx, sid)
    assert server.status == ServerStatus.error and server.facts is not None and server.fail_count == 0


# ---------------------------------------------------------------- health_checker


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        code = 200 if self.path == "/health" else 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class LocalService:
    """A tiny HTTP service on a fixed 127.0.0.1 port that can be stopped and started again."""

    def __init__(self) -> None:
        self.port = refusing_port()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), _Health)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            assert self._thread is not None
            self._thread.join(5)
            self._httpd = None


@pytest.fixture()
def service() -> Iterator[LocalService]:
    svc = LocalService()
    svc.start()
    yield svc
    svc.stop()


async def add_deployed_project(ctx: SyncContext, name: str, server_id: int, url: str) -> int:
    async with ctx.db.session() as s:
        project = Project(name=name, status=ProjectStatus.active, server_id=server_id)
        s.add(project)
        await s.flush()
        assert project.id is not None
        for status, dep_url in ((DeploymentStatus.succeeded, url), (DeploymentStatus.failed, "http://127.0.0.1:1/x")):
            s.add(
                Deployment(
                    project_id=project.id,
                    commit_sha="abc",
                    server_id=server_id,
                    port=0,
                    status=status,
                    url=dep_url,
                    idempotency_key=f"{name}:{status}",
                )
            )
        return project.id


async def failures(ctx: SyncContext, project_id: int) -> int:
    async with ctx.db.session() as s:
        cursor = await s.get(SyncCursor, health_checker.cursor_key(project_id))
        return cursor.consecutive_failures if cursor else 0


async def project_status(ctx: SyncContext, project_id: int) -> ProjectStatus:
    async with ctx.db.session() as s:
        project = await s.get(Project, project_id)
        assert project is not None
        return ProjectStatus(project.status)


def claim_port(ctx: SyncContext, project: str, session: int) -> None:
    """Write the project's pid file as a deploy does, naming ``session`` as the service (its pid is its session)."""
    run = ctx.settings.release_root.resolve() / project / "run"
    run.mkdir(parents=True, exist_ok=True)
    (run / "service.pid").write_text(f"{session}\n")


async def test_health_local_service(ctx: SyncContext, service: LocalService) -> None:
    local = await add_server(ctx, "localhost", 22, ServerStatus.ready, connection="local")
    pid = await add_deployed_project(ctx, "hello", local, f"http://127.0.0.1:{service.port}/health")
    claim_port(ctx, "hello", os.getsid(0))  # this process's session serves the port: it is "the service"

    summary = await health_checker.run_pass(ctx)
    assert summary.ok and summary.requests == 1 and summary.transient_failures == 0
    assert await failures(ctx, pid) == 0 and await incidents(ctx, "service_unhealthy") == []

    service.stop()
    for n in range(1, THRESHOLD + 2):
        summary = await health_checker.run_pass(ctx)
        assert summary.ok and summary.transient_failures == 1
        assert await failures(ctx, pid) == n
        opened = await incidents(ctx, "service_unhealthy")
        assert len(opened) == (0 if n < THRESHOLD else 1)
    (incident,) = opened
    assert (incident.severity, incident.subject_type, incident.subject_id) == ("critical", "project", pid)
    assert incident.resolved_at is None
    assert await project_status(ctx, pid) == ProjectStatus.active  # the incident says it, not the status

    service.start()
    summary = await health_checker.run_pass(ctx)
    assert summary.ok and summary.transient_failures == 0
    assert await failures(ctx, pid) == 0
    (incident,) = await incidents(ctx, "service_unhealthy")
    assert incident.resolved_at is not None
    assert await project_status(ctx, pid) == ProjectStatus.active


async def test_health_over_ssh_uses_curl_on_the_host(ctx: SyncContext, host: FakeSSHHost) -> None:
    sid = await add_server(ctx, "remote", host.port, ServerStatus.ready)
    pid = await add_deployed_project(ctx, "api", sid, "http://127.0.0.1:8123/health?deep=1")

    summary = await health_checker.run_pass(ctx)
    assert summary.ok and summary.transient_failures == 0
    command, proof = host.commands
    assert command.startswith("curl -fsS -o /dev/null -w '%{http_code}'")
    assert command.endswith("'http://127.0.0.1:8123/health?deep=1'")
    assert proof.endswith(" 8123 /srv/orchestrator/api/run/service.pid")  # who serves the port, asked on the host

    host.curl_code = 503
    for _ in range(THRESHOLD):
        summary = await health_checker.run_pass(ctx)
        assert summary.ok and summary.transient_failures == 1
    (incident,) = await incidents(ctx, "service_unhealthy")
    assert incident.resolved_at is None and "HTTP 503" in incident.message
    assert await project_status(ctx, pid) == ProjectStatus.active

    host.curl_code = 200
    await health_checker.run_pass(ctx)
    (incident,) = await incidents(ctx, "service_unhealthy")
    assert incident.resolved_at is not None and await failures(ctx, pid) == 0

    host.owner = (1, "port 8123 is held by another process: pid 77 (python3 stray.py)")  # it answers, not ours
    for _ in range(THRESHOLD):
        summary = await health_checker.run_pass(ctx)
        assert summary.transient_failures == 1
    stranger = [i for i in await incidents(ctx, "service_unhealthy") if i.resolved_at is None]
    assert len(stranger) == 1 and "held by another process: pid 77" in stranger[0].message
    assert "HTTP 200" in stranger[0].message


async def test_health_unreachable_ssh_host_is_unknown_not_unhealthy(ctx: SyncContext) -> None:
    sid = await add_server(ctx, "remote", refusing_port(), ServerStatus.ready)
    pid = await add_deployed_project(ctx, "api", sid, "http://127.0.0.1:8123/health")
    for _ in range(THRESHOLD + 1):
        summary = await health_checker.run_pass(ctx)
        assert summary.ok and summary.transient_failures == 1
        assert any("health unknown" in note for note in summary.notes)
    assert await failures(ctx, pid) == 0 and await incidents(ctx, "service_unhealthy") == []


async def test_health_skips_projects_not_active_or_not_deployed(ctx: SyncContext, host: FakeSSHHost) -> None:
    sid = await add_server(ctx, "remote", host.port, ServerStatus.ready)
    pid = await add_deployed_project(ctx, "api", sid, "http://127.0.0.1:8123/health")
    async with ctx.db.session() as s:
        project = await s.get(Project, pid)
        assert project is not None
        project.status = ProjectStatus.maintenance
        s.add(project)
        s.add(Project(name="undeployed", status=ProjectStatus.active, server_id=sid))
    summary = await health_checker.run_pass(ctx)
    assert summary.requests == 0 and host.commands == []


async def test_health_of_a_port_another_process_answers_is_unhealthy(ctx: SyncContext, service: LocalService) -> None:
    """The deployed service died and something else now answers 200 on its port: not healthy, and named."""
    local = await add_server(ctx, "localhost", 22, ServerStatus.ready, connection="local")
    pid = await add_deployed_project(ctx, "hello", local, f"http://127.0.0.1:{service.port}/health")
    gone = subprocess.Popen(["true"], start_new_session=True)
    gone.wait()
    claim_port(ctx, "hello", gone.pid)  # the service's session is over; this process holds the port

    for n in range(1, THRESHOLD + 1):
        summary = await health_checker.run_pass(ctx)
        assert summary.transient_failures == 1 and await failures(ctx, pid) == n

    (incident,) = await incidents(ctx, "service_unhealthy")
    assert f"port {service.port} is held by another process: pid {os.getpid()}" in incident.message
    assert "the deployed service is not running" in incident.message and "is not the service's" in incident.message
