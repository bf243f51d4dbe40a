"""The sync service sends the webhook deliveries other processes left behind: pending ones from a CLI process that
exited, `sending` ones from a sender killed mid-send (same delivery id, at least once), and a sender racing
another sends each delivery once. All through real processes, a real receiver on 127.0.0.1 and SQLite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import col, select

from core.db import Database
from core.settings import Settings
from infra.webhooks import signature_matches
from models.enums import ServerStatus
from models.notification_tables import WebhookDelivery
from models.tables import Server, SyncCursor, utcnow
from services import notifications
from services.webhook_delivery import lease_key
from tests.fixtures.dead_host import CountingListener
from tests.integration.helpers import REPO_ROOT, cli_env
from tests.integration.webhook_receiver import Receiver

SECRET = "whsec-sender-Zq8t-never-shown"


def orchestrator(settings: Settings, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env={**cli_env(settings), **(env or {})},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def start(settings: Settings, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", *args],
        env={**cli_env(settings), **(env or {})},
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def sender_pass(settings: Settings, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = orchestrator(settings, "sync", "--once", "--only", "webhook_sender", "--json", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    [summary] = json.loads(done.stdout)
    assert summary["worker"] == "webhook_sender" and summary["ok"], summary
    assert SECRET not in done.stdout + done.stderr
    return summary


def add_webhook(settings: Settings, url: str, events: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "webhooks", "add", url, "--events", events, "--secret-from-stdin"],
        env=cli_env(settings),
        cwd=REPO_ROOT,
        input=SECRET,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


async def open_db(settings: Settings) -> Database:
    settings.ensure_data_dir()
    db = Database(settings.db_url)
    await db.migrate()
    return db


async def deliveries(settings: Settings) -> list[WebhookDelivery]:
    db = await open_db(settings)
    try:
        async with db.session() as s:
            return list((await s.exec(select(WebhookDelivery).order_by(col(WebhookDelivery.id)))).all())
    finally:
        await db.dispose()


def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


class HoldingReceiver:
    """A receiver that checks signatures like :class:`Receiver` but answers only once ``release`` is set (a hung
    receiver), then each request ``delay_s`` after it arrived or was released (a slow one)."""

    def __init__(self, secret: bytes, *, delay_s: float = 0.0) -> None:
        self.secret = secret
        self.delay_s = delay_s
        self.release = threading.Event()
        self.arrived: list[tuple[str, bool]] = []  # (X-Orchestrator-Delivery, signature ok), in arrival order
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                ok = signature_matches(receiver.secret, body, self.headers.get("X-Hub-Signature-256"))
                with receiver.lock:
                    receiver.arrived.append((self.headers.get("X-Orchestrator-Delivery", ""), ok))
                receiver.release.wait(60)
                time.sleep(receiver.delay_s)
                self.send_response(204 if ok else 500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def holding() -> Iterator[HoldingReceiver]:
    receiver = HoldingReceiver(SECRET.encode())
    yield receiver
    receiver.close()


async def test_an_event_a_cli_process_left_pending_is_delivered_by_the_sync(settings: Settings) -> None:
    with Receiver(SECRET.encode()) as receiver:
        add_webhook(settings, receiver.url, "incident.opened")
        # A server that does not answer: `sync --only server_sync` opens server_down (an incident.opened event) and
        # exits; nothing in that process sends webhooks.
        dead = CountingListener()
        empty = settings.data_dir / "known_hosts"
        empty.write_text("")
        db = await open_db(settings)
        async with db.session() as s:
            s.add(Server(name="box", address="127.0.0.1", ssh_port=dead.port, status=ServerStatus.ready))
        await db.dispose()
        env = {"ORCH_SSH_KNOWN_HOSTS": str(empty), "ORCH_SYNC_FAILURE_THRESHOLD": "1"}
        try:
            done = orchestrator(settings, "sync", "--once", "--only", "server_sync", env=env)
            assert done.returncode == 0, done.stdout + done.stderr
        finally:
            dead.close()
        [row] = await deliveries(settings)
        assert (row.event, row.status, row.attempts) == ("incident.opened", "pending", 0)
        assert receiver.received == [], "the process that made the event exited without sending it"

        summary = sender_pass(settings)

        assert (summary["requests"], summary["updated"], summary["transient_failures"]) == (1, 1, 0), summary
        [got] = receiver.received
        assert got.signed_ok and got.answered == 204
        assert got.headers["x-orchestrator-delivery"] == row.delivery_id == got.json["delivery_id"]
        assert got.json["event"] == "incident.opened" and got.json["data"]["kind"] == "server_down"
        [sent] = await deliveries(settings)
        assert (sent.status, sent.attempts, sent.last_status) == ("delivered", 1, 204)
        assert sender_pass(settings)["requests"] == 0 and len(receiver.received) == 1, "nothing is sent twice"


async def test_a_delivery_left_sending_by_a_killed_sender_is_sent_again_with_the_same_id(
    settings: Settings, holding: HoldingReceiver
) -> None:
    add_webhook(settings, holding.url, "run.failed")
    db = await open_db(settings)
    await notifications.run_failed(db, thread_id="t-0123456789ab", error="ModelUnreachable: no answer")
    await db.dispose()
    [row] = await deliveries(settings)

    # A sender takes the delivery and is killed while the receiver holds its request.
    sender = start(settings, "webhooks", "send", env={"ORCH_WEBHOOK_TIMEOUT_S": "60"})
    try:
        wait_for(lambda: len(holding.arrived) == 1, 60, "the sender's request")
    finally:
        os.kill(sender.pid, signal.SIGKILL)
        sender.wait(timeout=10)
    [stuck] = await deliveries(settings)
    assert (stuck.status, stuck.delivery_id) == ("sending", row.delivery_id)
    holding.release.set()  # the receiver answers from now on (the killed sender never reads it)

    # Its lease is fresh: another sender leaves it alone (its sender might still be working on it).
    assert sender_pass(settings)["requests"] == 0
    assert len(holding.arrived) == 1 and (await deliveries(settings))[0].status == "sending"

    # The lease is old (the sender stopped renewing it long ago): the sync takes the delivery over and sends it.
    db = await open_db(settings)
    async with db.session() as s:
        aged = update(SyncCursor).where(col(SyncCursor.key) == lease_key(row.id or 0))
        moved = await s.exec(aged.values(updated_at=utcnow() - timedelta(hours=1)))  # type: ignore[call-overload]
        assert moved.rowcount == 1, "the killed sender held a lease"
    await db.dispose()
    summary = sender_pass(settings)

    assert (summary["requests"], summary["updated"]) == (1, 1), summary
    assert any("left sending by a sender that stopped" in n for n in summary["notes"]), summary
    assert holding.arrived == [(row.delivery_id, True), (row.delivery_id, True)], "at least once, one delivery id"
    [sent] = await deliveries(settings)
    assert (sent.status, sent.last_status) == ("delivered", 204)
    db = await open_db(settings)
    async with db.session() as s:
        assert await s.get(SyncCursor, lease_key(row.id or 0)) is None, "the lease ends with the delivery"
    await db.dispose()


async def test_two_senders_at_once_send_each_pending_delivery_once(settings: Settings) -> None:
    slow = HoldingReceiver(SECRET.encode(), delay_s=0.05)  # each answer takes a moment: the senders overlap
    try:
        add_webhook(settings, slow.url, "run.failed")
        db = await open_db(settings)
        for n in range(20):
            await notifications.run_failed(db, thread_id=f"t-{n:012d}", error="boom")
        await db.dispose()
        rows = await deliveries(settings)

        # `orchestrator webhooks send` and the sync service (no sync lock between them) at the same time: the
        # receiver holds the first request of each until both are sending, then both race through the rest.
        send = start(settings, "webhooks", "send")
        wait_for(lambda: len(slow.arrived) == 1, 60, "the first sender's request")
        sync = start(settings, "sync", "--once", "--only", "webhook_sender", "--json")
        wait_for(lambda: len(slow.arrived) == 2, 60, "the second sender's request")
        slow.release.set()
        sync_out, sync_err = sync.communicate(timeout=180)
        send_out, send_err = send.communicate(timeout=180)
        assert sync.returncode == 0 and send.returncode == 0, sync_err + send_err
        [summary] = json.loads(sync_out)
        by_send = int(send_out.split()[0])  # "N delivered"

        ids = [d for d, _ in slow.arrived]
        assert sorted(ids) == sorted(r.delivery_id for r in rows), "every delivery sent exactly once"
        assert all(ok for _, ok in slow.arrived)
        assert summary["updated"] + by_send == len(rows) == summary["requests"] + by_send
        assert summary["updated"] > 0 and by_send > 0, "both senders sent some"
        assert {r.status for r in await deliveries(settings)} == {"delivered"}
    finally:
        slow.close()
