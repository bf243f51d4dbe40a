"""The sync service: `orchestrator sync` once and forever, one process at a time, and the provisioner_trigger worker."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage

from core.db import Database
from core.settings import Settings
from infra.forge.factory import make_forge
from models.enums import ServerStatus
from models.tables import Event, Incident, Server
from runtime.threads import OrchestratorRuntime, Pending, ThreadView
from services.leases import ensure_default_server
from services.recovery import recover
from sync_workers import provisioner_trigger
from sync_workers.base import SyncContext
from sync_workers.lock import SyncLock, waiting_message
from tests.integration.helpers import REPO_ROOT, REQUEST, cli, cli_env, rows, run_turn

WORKER_NAMES = [
    "github_sync",
    "server_sync",
    "health_checker",
    "provisioner_trigger",
    "deadlines",
    "webhook_sender",
]


def closed_port() -> int:
    """A port nothing listens on (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def open_db(settings: Settings) -> Database:
    settings.ensure_data_dir()
    db = Database(settings.db_url)
    await db.migrate()
    return db


SUMMARY = re.compile(rf"^(?:\d\d:\d\d:\d\d )?({'|'.join(WORKER_NAMES)}): ")


def summary_lines(text: str) -> list[str]:
    """Summary lines of ``orchestrator sync`` output (``--once`` plain, forever with a time stamp)."""
    return [line for line in text.splitlines() if SUMMARY.match(line)]


def workers_of(lines: list[str]) -> list[str]:
    return [m.group(1) for line in lines if (m := SUMMARY.match(line))]


def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def start_sync(
    settings: Settings, out: Path, *args: str, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with out.with_suffix(".out").open("wb") as stdout, out.with_suffix(".err").open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", "sync", *args],
            env={**cli_env(settings), **(extra_env or {})},
            cwd=REPO_ROOT,
            stdout=stdout,
            stderr=stderr,
        )


# --- the process ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_sync_once_runs_every_worker_once(settings: Settings) -> None:
    done = cli(settings, "sync", "--once", timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = summary_lines(done.stdout)
    assert workers_of(lines) == WORKER_NAMES, done.stdout
    assert lines[0].startswith("github_sync: skipped"), lines[0]
    assert all(line.endswith("ok") for line in lines[1:]), lines
    assert "created=0 updated=0 missing=0 transient=0 requests=1 304=0" in lines[1], lines[1]  # one localhost check
    assert "server_sync: running…" in done.stderr and "github_sync: running" not in done.stderr  # progress, skips
    [server] = await rows(settings, Server)
    assert server.name == "localhost" and server.status == ServerStatus.ready
    assert server.last_seen_at is not None and server.facts, "server_sync checked localhost and recorded it"

    as_json = cli(settings, "sync", "--once", "--json", timeout=180)
    assert as_json.returncode == 0, as_json.stderr
    summaries = json.loads(as_json.stdout)
    assert [s["worker"] for s in summaries] == WORKER_NAMES
    assert all(s["ok"] and not s["errors"] for s in summaries)
    assert summaries[0]["notes"][0].startswith("skipped: ")
    assert summaries[1]["requests"] == 1  # one check of localhost


def test_sync_refuses_an_unknown_worker(settings: Settings) -> None:
    done = cli(settings, "sync", "--once", "--only", "github_snyc", timeout=60)
    assert done.returncode == 2
    assert "unknown worker(s) github_snyc" in done.stderr and "server_sync" in done.stderr


@pytest.mark.slow
def test_two_sync_processes_never_both_run_a_worker(settings: Settings, tmp_path: Path) -> None:
    fast = {"ORCH_SERVER_SYNC_INTERVAL_S": "1", "ORCH_HEALTH_CHECK_INTERVAL_S": "1", "ORCH_PROVISIONER_INTERVAL_S": "1"}
    lock_file = settings.data_dir / "sync.lock"
    first = start_sync(settings, tmp_path / "first", extra_env=fast)
    second: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: lock_file.exists() and lock_file.read_text().strip() == str(first.pid), 60, "the lock")
        first_out = tmp_path / "first.out"
        wait_for(lambda: "server_sync:" in first_out.read_text(), 60, "the first process's first pass")

        second = start_sync(settings, tmp_path / "second", "--once")
        second_err, second_out = tmp_path / "second.err", tmp_path / "second.out"
        wait_for(lambda: "holds the lock; waiting" in second_err.read_text(), 60, "the waiting message")
        assert waiting_message(first.pid) in second_err.read_text()
        time.sleep(3)
        assert second.poll() is None, "the second process must keep waiting"
        assert summary_lines(second_out.read_text()) == [], "no worker may run while the first holds the lock"
        passes_before = len(summary_lines(first_out.read_text()))
        assert passes_before >= 3, "the first process kept working meanwhile"

        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 0, (tmp_path / "first.err").read_text()
        assert "stopped cleanly" in (tmp_path / "first.err").read_text()
        assert second.wait(timeout=180) == 0, second_err.read_text()
        lines = summary_lines(second_out.read_text())
        assert workers_of(lines) == WORKER_NAMES
        assert lock_file.read_text() == "", "the lock file is cleared on release"
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


async def test_sync_lock_is_exclusive_and_freed_by_a_crash(settings: Settings) -> None:
    holder = SyncLock(settings)
    assert await holder.acquire(wait=False)
    told: list[int | None] = []
    other = SyncLock(settings, poll_s=0.05)
    assert not await other.acquire(wait=False, on_wait=told.append)
    assert told == [os.getpid()]

    waiting = asyncio.create_task(other.acquire(on_wait=told.append))
    await asyncio.sleep(0.3)
    assert not waiting.done() and told == [os.getpid(), os.getpid()], "on_wait is called once per acquire"
    await holder.release()
    assert await asyncio.wait_for(waiting, 5)
    await other.release()

    # A holder killed with SIGKILL leaves no stale lock: the kernel drops the flock with the process.
    code = (
        "import asyncio, sys, time\n"
        "from core.settings import Settings\n"
        "from sync_workers.lock import SyncLock\n"
        f"lock = SyncLock(Settings(data_dir={str(settings.data_dir)!r}))\n"
        "assert asyncio.run(lock.acquire(wait=False))\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        assert await holder.holder_pid() == proc.pid
        assert not await holder.acquire(wait=False)
    finally:
        proc.kill()
        proc.wait()
    assert await holder.acquire(wait=False)
    await holder.release()


# --- provisioner_trigger --------------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_waiting_project_is_resumed_when_a_server_becomes_ready(settings: Settings) -> None:
    waiting = settings.model_copy(update={"register_localhost": False})
    events = await run_turn(waiting, REQUEST, "t-wait")
    [ask] = [ev for ev in events if ev.kind == "interrupt"]
    assert ask.payload and ask.payload["kind"] == "waiting_for_resources"

    db = await open_db(waiting)
    try:
        ctx = SyncContext(settings=waiting, db=db)
        assert (await provisioner_trigger.run_pass(ctx)).resumed == 0, "no ready server yet: nothing resumed"
        async with db.session() as s:
            s.add(
                Server(
                    name="web-1",
                    address="127.0.0.1",
                    connection="local",
                    status=ServerStatus.provisioning,
                    port_range_start=waiting.port_range_start,
                    port_range_end=waiting.port_range_end,
                )
            )
        summary = await provisioner_trigger.run_pass(ctx)
        assert summary.ok, summary.errors
        assert (summary.updated, summary.resumed) == (1, 1), summary
        again = await provisioner_trigger.run_pass(ctx)
        assert (again.updated, again.resumed, again.errors) == (0, 0, []), "a second pass has nothing to do"
    finally:
        await db.dispose()

    [server] = await rows(waiting, Server)
    assert server.status == ServerStatus.ready
    [provisioned] = [e for e in await rows(waiting, Event) if e.subject_type == "server"]
    assert (provisioned.from_status, provisioned.to_status) == ("provisioning", "ready")
    assert provisioned.reason.startswith("provisioned: ok=")
    assert waiting.release_root.is_dir(), "provision.yml created the release root"
    assert pwd.getpwnam(waiting.service_user).pw_shell == "/usr/sbin/nologin", "and the services' own user"

    async with OrchestratorRuntime(waiting) as rt:
        [pending] = await rt.pending("t-wait")
        state = await rt.graph.aget_state({"configurable": {"thread_id": "t-wait"}})
    assert pending.payload["kind"] == "deploy_approval" and pending.payload["server"] == "web-1"
    said = [str(m.content) for m in state.values["messages"] if isinstance(m, AIMessage)]
    assert "Retrying resources: server web-1 is ready." in said


@pytest.mark.slow
async def test_a_failed_provision_marks_the_server_error_with_an_incident(settings: Settings) -> None:
    db = await open_db(settings)
    try:
        async with db.session() as s:
            s.add(
                Server(
                    name="vps-down",
                    address="127.0.0.1",
                    ssh_port=closed_port(),
                    connection="ssh",
                    status=ServerStatus.provisioning,
                )
            )
        summary = await provisioner_trigger.run_pass(SyncContext(settings=settings, db=db))
    finally:
        await db.dispose()
    assert summary.ok, "a failed provision is the server's state, recorded; not a worker error"
    assert (summary.updated, summary.transient_failures, summary.resumed) == (1, 1, 0)
    [server] = await rows(settings, Server)
    assert server.status == ServerStatus.error
    [incident] = await rows(settings, Incident)
    assert (incident.kind, incident.severity, incident.subject_id) == ("provision_failed", "critical", server.id)
    assert incident.resolved_at is None
    assert "unreachable" in incident.message and "Connection refused" in incident.message
    [event] = [e for e in await rows(settings, Event) if e.subject_type == "server"]
    assert event.to_status == "error" and "unreachable" in event.reason

    # "fix #N": provision again now; still unreachable -> error, the one incident stays open
    db = await open_db(settings)
    try:
        again = await recover(settings, db, make_forge(settings), incident.id or 0, "t-fix", actor="cli:test")
        assert again["resolved"] is False and "failed again" in again["outcome"]
        assert [i.resolved_at for i in await rows(settings, Incident)] == [None]
        async with db.session() as s:  # the operator fixes the host (here: it becomes this machine)
            row = await s.get(Server, server.id)
            assert row is not None and row.status == ServerStatus.error
            row.connection = "local"
            s.add(row)
        fixed = await recover(settings, db, make_forge(settings), incident.id or 0, "t-fix", actor="cli:test")
    finally:
        await db.dispose()
    assert fixed["resolved"] is True, fixed
    [server] = await rows(settings, Server)
    [incident] = await rows(settings, Incident)
    assert server.status == ServerStatus.ready and incident.resolved_at is not None
    trail = [(e.from_status, e.to_status) for e in await rows(settings, Event) if e.subject_type == "server"]
    assert trail[1:] == [
        ("error", "provisioning"),
        ("provisioning", "error"),
        ("error", "provisioning"),
        ("provisioning", "ready"),
    ]


class FlakyRuntime:
    """Stands in for OrchestratorRuntime: two threads wait for resources, resuming the first one raises."""

    def __init__(self) -> None:
        self.resumed: list[tuple[str, str | None]] = []

    async def threads(self) -> list[ThreadView]:
        ask = {"kind": "waiting_for_resources", "project_id": 1}
        return [
            ThreadView(id=t, title=t, updated_at="", pending=[Pending(id=f"i-{t}", payload=ask)])
            for t in ("t-broken", "t-fine")
        ] + [
            ThreadView(id="t-approval", title="", updated_at="", pending=[Pending("i-x", {"kind": "deploy_approval"})])
        ]

    async def resume(self, thread_id: str, answer: Any, interrupt_id: str | None = None, *, actor: Any) -> Any:
        assert actor.name == "system:provisioner_trigger"
        if thread_id == "t-broken":
            raise RuntimeError("checkpoint unreadable")
        self.resumed.append((thread_id, answer.text))
        yield None


async def test_a_thread_whose_resume_fails_does_not_stop_the_others(settings: Settings) -> None:
    db = await open_db(settings)
    try:
        await ensure_default_server(db, settings)
        rt = FlakyRuntime()
        summary = await provisioner_trigger.run_pass(SyncContext(settings=settings, db=db), rt)  # type: ignore[arg-type]
    finally:
        await db.dispose()
    assert rt.resumed == [("t-fine", "server localhost is ready")]
    assert summary.resumed == 1
    assert summary.errors == ["thread t-broken: RuntimeError: checkpoint unreadable"]


@pytest.mark.slow
def test_a_sync_that_loses_its_lock_stops_working(settings: Settings, tmp_path: Path) -> None:
    fast = {"ORCH_SERVER_SYNC_INTERVAL_S": "1", "ORCH_HEALTH_CHECK_INTERVAL_S": "1", "ORCH_PROVISIONER_INTERVAL_S": "1"}
    lock_file = settings.data_dir / "sync.lock"
    proc = start_sync(settings, tmp_path / "holder", extra_env=fast)
    try:
        out, err = tmp_path / "holder.out", tmp_path / "holder.err"
        wait_for(lambda: "server_sync:" in out.read_text(), 60, "the first pass")
        lock_file.unlink()  # another process could now take a lock on a new file of that name

        assert proc.wait(timeout=30) == 1, err.read_text()
        assert "lost the lock" in err.read_text()
        passes = len(summary_lines(out.read_text()))
        time.sleep(2.5)
        assert len(summary_lines(out.read_text())) == passes, "no pass after the lock was lost"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
