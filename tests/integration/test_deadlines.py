"""Approval deadlines end to end: the payload and the listings show them, a real `orchestrator sync --once` started
after the deadline rejects the deploy as system:deadline, the webhook hears it, the person is told on the next turn;
reminders are sent once per point."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from core.db import Database
from core.settings import Settings
from models.notification_tables import WebhookDelivery
from models.tables import Event, Project, ThreadRecord
from models.time_tables import InterruptDeadline
from runtime.multitask import hold_thread
from sync_workers import deadlines as deadline_worker
from sync_workers.base import SyncContext
from tests.integration.helpers import REQUEST, cli, contract_variant, rows, run_turn, scenario_variant
from tests.integration.webhook_receiver import Receiver

pytestmark = pytest.mark.slow
SECRET = "whsec-deadline-test"
FOLLOW_UP = "what happened to hello-api?"
FOLLOW_UP_ANSWER = "hello-api stays verified; ask me to deploy it when you are ready."
FOLLOW_UP_EXCHANGE = {
    "id": "po-follow-up",
    "role": "po",
    "when": {"contains": [FOLLOW_UP]},
    "reply": {"content": FOLLOW_UP_ANSWER},
}


@pytest.fixture()
def deadline_settings(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The hello-api recording plus a PO answer to a follow-up question; wide output for the CLI's lines."""
    monkeypatch.setenv("COLUMNS", "400")
    rec = scenario_variant(tmp_path / "rec", "deadline", extra=[FOLLOW_UP_EXCHANGE])
    return settings.model_copy(update={"model": "replay/deadline", "replay_dir": rec})


def add_webhook(settings: Settings, url: str) -> None:
    added = cli(
        settings, "webhooks", "add", url, "--secret-from-stdin", "--events", "approval.reminded,approval.timed_out",
        stdin=SECRET,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr


def listed_pending(settings: Settings, thread_id: str) -> list[dict[str, Any]]:
    listed = cli(settings, "threads", "--json")
    assert listed.returncode == 0, listed.stderr
    [view] = [v for v in json.loads(listed.stdout) if v["id"] == thread_id]
    return list(view["pending"])


async def deliveries(settings: Settings, event: str) -> list[WebhookDelivery]:
    return [d for d in await rows(settings, WebhookDelivery) if d.event == event]


def summary_line(stdout: str, worker: str) -> str:
    [found] = [line for line in stdout.splitlines() if line.startswith(f"{worker}: ")]
    return found


async def test_an_unanswered_deploy_approval_is_rejected_by_the_sync_that_starts_after_its_deadline(
    deadline_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = deadline_settings
    monkeypatch.setenv("ORCH_DEADLINE_DEPLOY_APPROVAL_S", "3")
    monkeypatch.setenv("ORCH_DEADLINE_REMINDERS", "2")
    thread = "t-deadline0001"
    with Receiver(SECRET.encode()) as receiver:
        add_webhook(settings, receiver.url)

        chat = cli(settings, "chat", "--thread", thread, "--message", REQUEST)
        assert chat.returncode == 0, chat.stdout + chat.stderr
        [hint] = [line for line in chat.stdout.splitlines() if line.startswith("Answer later with:")]
        assert "--approve" in hint and hint.endswith("UTC (then: reject)"), hint
        [pending] = listed_pending(settings, thread)
        payload = pending["payload"]
        assert payload["kind"] == "deploy_approval" and payload["on_deadline"] == "reject"
        deadline = datetime.fromisoformat(payload["deadline"])
        assert deadline.utcoffset() is not None and deadline.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
        shown = deadline.strftime("%Y-%m-%d %H:%M:%S UTC")
        assert f"deadline {shown} (then: reject)" in hint
        table = cli(settings, "threads")
        assert "deploy_approval: Deploy hello-api" in table.stdout
        assert f"deadline {shown} (then: reject)" in table.stdout
        [row] = await rows(settings, InterruptDeadline)
        assert (row.thread_id, row.interrupt_id, row.status) == (thread, pending["id"], "pending")
        assert row.deadline_at == deadline and row.default_answer == {"kind": "reject", "text": "no answer within 3 s"}

        while datetime.now(UTC) <= deadline:  # no sync runs meanwhile: the deadline passes unwatched
            time.sleep(0.2)
        assert listed_pending(settings, thread), "nothing answers a question while the sync is down"

        sync = cli(settings, "sync", "--once")
        assert sync.returncode == 0, sync.stdout + sync.stderr
        line = summary_line(sync.stdout, "deadlines")
        assert "updated=1" in line and "resumed=1" in line and line.endswith("ok"), sync.stdout
        assert f"deploy_approval on thread {thread}: deadline passed; answered reject as system:deadline" in sync.stdout

        assert listed_pending(settings, thread) == []
        [project] = await rows(settings, Project)
        assert project.status == "verified", "a rejected deploy leaves the project verified"
        [rejected] = [e for e in await rows(settings, Event) if e.to_status == "deploy_rejected"]
        assert rejected.actor == "system:deadline" and rejected.thread_id == thread
        assert "no answer within 3 s" in rejected.reason
        [timed_out] = await deliveries(settings, "approval.timed_out")
        data = timed_out.payload["data"]
        assert (data["thread_id"], data["interrupt_id"]) == (thread, pending["id"])
        assert data["deadline"] == payload["deadline"]
        assert data["answered_by"] == "system:deadline" and data["default_answer"]["kind"] == "reject"
        assert await deliveries(settings, "approval.reminded") == [], "no reminder once the deadline has passed"
        [row] = await rows(settings, InterruptDeadline)
        assert row.status == "timed_out" and row.settled_at is not None
        [record] = [r for r in await rows(settings, ThreadRecord) if r.id == thread]
        assert record.notice is not None
        assert f"The deploy approval of hello-api asked at {row.created_at:%Y-%m-%d %H:%M:%S} UTC" in record.notice
        assert f"had no answer by its deadline ({shown}); it was rejected by system:deadline" in record.notice

        again = cli(settings, "sync", "--once")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "updated=0" in summary_line(again.stdout, "deadlines") and "resumed" not in again.stdout
        assert len([e for e in await rows(settings, Event) if e.to_status == "deploy_rejected"]) == 1
        assert len(await deliveries(settings, "approval.timed_out")) == 1, "the second start does nothing more"

        sent = cli(settings, "webhooks", "send")
        assert sent.returncode == 0, sent.stderr
        heard = [r.json for r in receiver.received if r.json["event"] == "approval.timed_out"]
        assert len(heard) == 1 and heard[0]["data"]["thread_id"] == thread
        assert all(r.signed_ok for r in receiver.received)

    turn = cli(settings, "chat", "--thread", thread, "--message", FOLLOW_UP)
    assert turn.returncode == 0, turn.stdout + turn.stderr
    said = " ".join(turn.stdout.replace("│", " ").split())
    assert "it was rejected by system:deadline (no answer within 3 s)" in said, turn.stdout
    assert FOLLOW_UP_ANSWER in said
    [record] = [r for r in await rows(settings, ThreadRecord) if r.id == thread]
    assert record.notice is None, "told once, then cleared"


async def test_a_reminder_is_sent_once_per_point_before_the_deadline(
    deadline_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = deadline_settings.model_copy(update={"deadline_deploy_approval_s": 3600})
    monkeypatch.setenv("ORCH_DEADLINE_REMINDERS", "7200,60")  # 2 h before a 1 h deadline: due at once; 60 s: not yet
    thread = "t-deadline0002"
    with Receiver(SECRET.encode()) as receiver:
        add_webhook(settings, receiver.url)
        events = await run_turn(settings, REQUEST, thread)
        [ask] = [ev for ev in events if ev.kind == "interrupt"]
        assert ask.payload is not None and ask.payload["on_deadline"] == "reject"
        deadline = datetime.fromisoformat(ask.payload["deadline"])
        assert 3500 < (deadline - datetime.now(UTC)).total_seconds() <= 3600

        first = cli(settings, "sync", "--once", "--only", "deadlines")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "updated=1" in summary_line(first.stdout, "deadlines"), first.stdout
        assert f"reminded: deploy_approval of hello-api on thread {thread}" in first.stdout
        [reminded] = await deliveries(settings, "approval.reminded")
        data = reminded.payload["data"]
        assert (data["thread_id"], data["interrupt_id"], data["reminder_s"]) == (thread, ask.interrupt_id, 7200)
        assert 0 < data["seconds_left"] <= 3600 and data["deadline"] == ask.payload["deadline"]
        [row] = await rows(settings, InterruptDeadline)
        assert (row.status, row.reminders_sent) == ("pending", [7200])
        assert [p["id"] for p in listed_pending(settings, thread)] == [ask.interrupt_id], "still waiting for a person"

        second = cli(settings, "sync", "--once", "--only", "deadlines")
        assert second.returncode == 0, second.stdout + second.stderr
        assert "updated=0" in summary_line(second.stdout, "deadlines")
        assert len(await deliveries(settings, "approval.reminded")) == 1, "each point is reminded once"
        assert await deliveries(settings, "approval.timed_out") == []

        sent = cli(settings, "webhooks", "send")
        assert sent.returncode == 0, sent.stderr
        assert [r.json["event"] for r in receiver.received] == ["approval.reminded"]
        assert receiver.received[0].signed_ok

        answered = cli(settings, "resume", thread, "--reject", "not this week")
        assert answered.returncode == 0, answered.stderr
        [row] = await rows(settings, InterruptDeadline)
        assert row.status == "answered", "an answer in time settles the deadline"
        rejected = [e for e in await rows(settings, Event) if e.to_status == "deploy_rejected"]
        assert [e.actor.startswith("cli:") for e in rejected] == [True]


async def test_a_stuck_loop_nobody_guides_is_stopped_and_a_busy_thread_waits_for_the_next_pass(
    settings: Settings, tmp_path: Path
) -> None:
    contract = contract_variant(tmp_path / "contract", IMPL=1)  # the first IMPL round fails: guidance is asked
    settings = settings.model_copy(update={"contract_path": contract, "deadline_guidance_s": 1})
    thread = "t-deadline0003"
    events = await run_turn(settings, REQUEST, thread)
    [ask] = [ev for ev in events if ev.kind == "interrupt"]
    assert ask.payload is not None and ask.payload["kind"] == "engineering_guidance"
    assert ask.payload["on_deadline"] == "stop"
    deadline = datetime.fromisoformat(ask.payload["deadline"])
    while datetime.now(UTC) <= deadline:
        time.sleep(0.2)

    db = Database(settings.db_url)
    try:
        async with hold_thread(settings.data_dir, thread):  # a run of the thread is going (a real flock)
            busy = await deadline_worker.run_pass(SyncContext(settings=settings, db=db))
    finally:
        await db.dispose()
    assert busy.ok and busy.updated == 0, busy
    assert any("running elsewhere" in note and "applied on a later pass" in note for note in busy.notes), busy.notes
    [row] = await rows(settings, InterruptDeadline)
    assert row.status == "pending", "given back for the next pass"
    assert [p["id"] for p in listed_pending(settings, thread)] == [ask.interrupt_id]

    done = cli(settings, "sync", "--once", "--only", "deadlines")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resumed=1" in summary_line(done.stdout, "deadlines"), done.stdout
    assert listed_pending(settings, thread) == []
    [project] = await rows(settings, Project)
    assert project.status == "cancelled", "stopped as after a person's stop"
    trail = [(e.to_status, e.actor) for e in await rows(settings, Event) if e.subject_type == "project"]
    assert ("guidance_given", "system:deadline") in trail and ("cancelled", "system:deadline") in trail, trail
    [record] = [r for r in await rows(settings, ThreadRecord) if r.id == thread]
    assert record.notice is not None and record.notice.startswith("The guidance request of hello-api asked at ")
    assert record.notice.endswith("; the work was stopped by system:deadline.")
    [row] = await rows(settings, InterruptDeadline)
    assert row.status == "timed_out"
