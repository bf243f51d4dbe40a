"""Outgoing webhooks against a real receiver on 127.0.0.1: signed deliveries, retries, the delivery log, the CLI
and the admin API; secrets never shown."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from core.db import Database
from core.settings import Settings
from models.notification_tables import WebhookDelivery
from services import notifications
from services.incidents import open_incident, resolve_incident
from tests.conftest import REPO_ROOT
from tests.fixtures.api_server import ApiServer, orchestrator, orchestrator_env, start_api, stop_api
from tests.integration.webhook_receiver import Receiver

SECRET = "whsec-Zq8t-never-shown"


def fast(settings: Settings, attempts: int = 3) -> Settings:
    return settings.model_copy(update={"webhook_attempts": attempts, "webhook_retry_wait_s": 0.01})


async def deliveries(db: Database) -> list[WebhookDelivery]:
    async with db.session() as s:
        return list((await s.exec(select(WebhookDelivery).order_by(WebhookDelivery.id))).all())


async def add(db: Database, settings: Settings, url: str, events: list[str], fmt: str = "json") -> int:
    info = await notifications.add_webhook(
        db, settings, url=url, secret=SECRET, events=events, fmt=fmt, actor="cli:test"
    )
    assert SECRET not in repr(info)
    return info.id


async def test_incident_events_are_signed_retried_and_logged(db: Database, settings: Settings) -> None:
    settings = fast(settings)
    with Receiver(SECRET.encode(), fail_first=2) as receiver:
        await add(db, settings, receiver.url, ["incident.opened", "incident.resolved"])
        async with db.session() as s:
            await open_incident(
                s, kind="server_down", severity="critical", subject_type="server", subject_id=7, message="no answer"
            )
        [row] = await deliveries(db)
        assert row.status == "pending" and receiver.received == [], "recorded with the event, not sent by it"
        assert await notifications.deliver_pending(db, settings) == 1
        assert [r.answered for r in receiver.received] == [500, 500, 204]
        assert all(r.signed_ok for r in receiver.received)
        assert {r.headers["x-orchestrator-delivery"] for r in receiver.received} == {row.delivery_id}
        body = receiver.received[-1].json
        assert body["event"] == "incident.opened" and body["data"]["subject_id"] == 7
        assert body["data"]["kind"] == "server_down" and body["delivery_id"] == row.delivery_id
        [done] = await deliveries(db)
        assert (done.status, done.attempts, done.last_status) == ("delivered", 3, 204)

        async with db.session() as s:
            assert await resolve_incident(s, kind="server_down", subject_type="server", subject_id=7)
        assert await notifications.deliver_pending(db, settings) == 1
        assert receiver.received[-1].json["event"] == "incident.resolved"
        assert await notifications.deliver_pending(db, settings) == 0, "nothing is sent twice"


async def test_a_delivery_that_keeps_failing_is_marked_failed_with_its_last_error(
    db: Database, settings: Settings
) -> None:
    settings = fast(settings, attempts=4)
    with Receiver(SECRET.encode(), always_fail=True) as receiver:
        await add(db, settings, receiver.url, ["all"])
        await notifications.run_failed(db, thread_id="t-0123456789ab", error="ModelUnreachable: no answer")
        assert await notifications.deliver_pending(db, settings) == 0
        assert len(receiver.received) == 4
    [row] = await deliveries(db)
    assert (row.status, row.attempts, row.last_status) == ("failed", 4, 500)
    assert row.last_error and "answered 500" in row.last_error and SECRET not in row.last_error
    [shown] = await notifications.list_deliveries(db)
    assert shown.status == "failed" and shown.event == "run.failed"


async def test_no_answer_at_all_is_retried_then_failed(db: Database, settings: Settings) -> None:
    with Receiver(b"x") as closed:
        url = closed.url  # a port nobody listens on once the receiver is gone
    await add(db, fast(settings, attempts=2), url, ["run.failed"])
    await notifications.run_failed(db, thread_id="t-0123456789ab", error="boom")
    await notifications.deliver_pending(db, fast(settings, attempts=2))
    [row] = await deliveries(db)
    assert (row.status, row.attempts, row.last_status) == ("failed", 2, None)
    assert row.last_error and "no answer" in row.last_error


async def test_only_subscribed_events_and_a_rolled_back_event_records_nothing(db: Database, settings: Settings) -> None:
    await add(db, settings, "http://127.0.0.1:9/hook", ["deploy.failed"])
    async with db.session() as s:
        await open_incident(s, kind="k", severity="warning", subject_type="server", subject_id=1, message="m")
    with pytest.raises(RuntimeError):
        async with db.session() as s:
            await notifications.enqueue(s, "deploy.failed", {"deployment_id": 1})
            raise RuntimeError("the change fails after the event")
    assert await deliveries(db) == []
    with pytest.raises(ValueError):
        async with db.session() as s:
            await notifications.enqueue(s, "deploy.exploded", {})


async def test_slack_format_and_approval_events(db: Database, settings: Settings) -> None:
    settings = fast(settings)
    with Receiver(SECRET.encode()) as receiver:
        await add(db, settings, receiver.url, ["approval.requested", "approval.timed_out"], fmt="slack")
        payload = {"kind": "deploy_approval", "question": "deploy abc to localhost:8100?"}
        assert await notifications.approval_requested(db, "t-0123456789ab", [("i-1", payload)]) == 1
        async with db.session() as s:
            await notifications.approval_deadline_event(
                s, timed_out=True, thread_id="t-0123456789ab", interrupt_id="i-1", payload=payload
            )
            await notifications.approval_deadline_event(  # not subscribed: nothing recorded
                s, timed_out=False, thread_id="t-0123456789ab", interrupt_id="i-1", payload=payload
            )
        assert await notifications.deliver_pending(db, settings) == 2
    texts = [r.json["text"] for r in receiver.received]
    assert texts[0].startswith("[orchestrator] approval.requested") and "t-0123456789ab" in texts[0]
    assert texts[1].startswith("[orchestrator] approval.timed_out")
    assert all(r.signed_ok for r in receiver.received)


async def test_bad_webhooks_are_refused(db: Database, settings: Settings) -> None:
    for url, events, fmt in [
        ("ftp://127.0.0.1/x", ["all"], "json"),
        ("http://user:pw@127.0.0.1/x", ["all"], "json"),
        ("http://127.0.0.1/x", ["nope"], "json"),
        ("http://127.0.0.1/x", ["all"], "xml"),
    ]:
        with pytest.raises(notifications.WebhookInputError):
            await notifications.add_webhook(db, settings, url=url, secret="s", events=events, fmt=fmt, actor="a")
    assert await notifications.list_webhooks(db) == []


def test_cli_adds_lists_sends_logs_and_removes_without_showing_the_secret(settings: Settings) -> None:
    env = orchestrator_env(settings, ORCH_WEBHOOK_RETRY_WAIT_S="0.01", ORCH_WEBHOOK_ATTEMPTS="3")
    data = settings.data_dir
    with Receiver(SECRET.encode(), fail_first=1) as receiver:
        cmd = [sys.executable, "-m", "cli.main", "--data-dir", str(data), "webhooks", "add", receiver.url]
        added = subprocess.run(
            [*cmd, "--secret-from-stdin", "--events", "run.failed,incident.opened", "--json"],
            input=SECRET + "\n", cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        [hook] = json.loads(added.stdout)
        assert hook["events"] == ["incident.opened", "run.failed"] and SECRET not in added.stdout
        refused = orchestrator(data, "webhooks", "add", receiver.url, "--events", "all", env=env)
        assert refused.returncode == 2 and "--secret-from-stdin" in refused.stderr

        listed = orchestrator(data, "webhooks", "list", "--json", env=env)
        assert json.loads(listed.stdout)[0]["url"] == receiver.url and SECRET not in listed.stdout
        assert SECRET.encode() not in (data / "orchestrator.db").read_bytes(), "the secret is stored encrypted"

        code = "import asyncio,sys; from core.db import Database; from services.notifications import run_failed; "
        code += f"asyncio.run(run_failed(Database({settings.db_url!r}), thread_id='t-1', error='boom'))"
        subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, check=True, timeout=60)
        sent = orchestrator(data, "webhooks", "send", env=env)
        assert sent.returncode == 0 and "1 delivered" in sent.stdout, sent.stderr
        assert [r.answered for r in receiver.received] == [500, 204]

    log = orchestrator(data, "webhooks", "deliveries", "--json", env=env)
    [row] = json.loads(log.stdout)
    assert (row["event"], row["status"], row["attempts"]) == ("run.failed", "delivered", 2)
    text = orchestrator(data, "webhooks", "deliveries", env=env)
    assert row["delivery_id"] in text.stdout and "delivered" in text.stdout
    assert orchestrator(data, "webhooks", "remove", str(hook["id"]), env=env).returncode == 0
    assert orchestrator(data, "webhooks", "remove", str(hook["id"]), env=env).returncode == 2
    assert json.loads(orchestrator(data, "webhooks", "list", "--json", env=env).stdout) == []


@pytest.fixture
def api(settings: Settings, tmp_path: Path) -> Iterator[ApiServer]:
    server = start_api(settings, tmp_path / "api.log", ORCH_WEBHOOK_RETRY_WAIT_S="0.01")
    try:
        yield server
    finally:
        stop_api(server)


async def test_admins_manage_webhooks_over_the_api(api: ApiServer) -> None:
    with Receiver(SECRET.encode()) as receiver:
        body = {"url": receiver.url, "secret": SECRET, "events": ["all"], "format": "json"}
        async with api.client("approver") as approver:
            assert (await approver.post("/webhooks", json=body)).status_code == 403
            assert (await approver.get("/webhooks/deliveries")).status_code == 403
        async with api.client("admin") as admin:
            created = await admin.post("/webhooks", json=body)
            assert created.status_code == 201 and SECRET not in created.text
            hook = created.json()
            assert hook["events"] == list(notifications.EVENTS)
            listed = await admin.get("/webhooks")
            assert [h["id"] for h in listed.json()] == [hook["id"]] and SECRET not in listed.text
            bad = await admin.post("/webhooks", json={**body, "events": ["nope"]})
            assert bad.status_code == 422 and "nope" in bad.text
            long_secret = "s" * 2000
            too_long = await admin.post("/webhooks", json={**body, "secret": long_secret})
            assert too_long.status_code == 422 and long_secret not in too_long.text
            assert (await admin.get("/webhooks/deliveries")).json() == []
            assert (await admin.delete(f"/webhooks/{hook['id']}")).status_code == 204
            assert (await admin.delete(f"/webhooks/{hook['id']}")).status_code == 404
    assert SECRET not in api.log.read_text()


def test_the_signature_is_githubs_scheme() -> None:
    from infra.webhooks import signature, signature_matches

    body = b'{"a": 1}'
    expected = "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert signature(b"k", body) == expected
    assert signature_matches(b"k", body, expected)
    assert not signature_matches(b"k", body + b" ", expected)
    assert not signature_matches(b"other", body, expected)
    assert not signature_matches(b"k", body, None)


async def test_runs_that_fail_or_stop_at_a_question_are_sent_in_the_background(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtime.listing import Pending
    from runtime.threads import OrchestratorRuntime
    from services.identities import cli_identity

    async def failing(*args: object, **kwargs: object) -> AsyncIterator[Any]:
        raise RuntimeError("a node failed")
        yield

    async def quiet(*args: object, **kwargs: object) -> AsyncIterator[Any]:
        return
        yield

    async def asking(thread_id: str, actor: object = None) -> list[Pending]:
        return [Pending(id="i-1", payload={"kind": "deploy_approval", "question": "deploy?"})]

    async def received(receiver: Receiver, n: int) -> list[Any]:
        for _ in range(200):  # sent by a background task, after the run reached the caller
            if len(receiver.received) >= n:
                break
            await asyncio.sleep(0.02)
        return receiver.received

    settings = fast(settings)
    with Receiver(SECRET.encode()) as receiver:
        async with OrchestratorRuntime(settings) as rt:
            await add(rt.db, settings, receiver.url, ["run.failed", "approval.requested"])
            monkeypatch.setattr(rt.graph, "astream", failing)
            with pytest.raises(RuntimeError):
                async for _ in rt.start_turn("status?", "t-fails", actor=cli_identity()):
                    pass
            [sent] = await received(receiver, 1)
            monkeypatch.setattr(rt.graph, "astream", quiet)
            monkeypatch.setattr(rt, "pending", asking)
            kinds = [ev.kind async for ev in rt._stream({}, "t-asks", cli_identity())]
            assert kinds == ["interrupt", "done"]
            _, asked = await received(receiver, 2)
    assert sent.signed_ok and sent.json["event"] == "run.failed"
    assert sent.json["data"] == {"thread_id": "t-fails", "project_id": None, "error": "RuntimeError: a node failed"}
    assert asked.signed_ok and asked.json["event"] == "approval.requested"
    assert asked.json["data"]["interrupt_id"] == "i-1" and asked.json["data"]["thread_id"] == "t-asks"
