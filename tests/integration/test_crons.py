"""User crons end to end: the CLI adds them, real `orchestrator sync` processes fire them into the thread."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.messages import AIMessage, HumanMessage
from sqlmodel import select

from core.settings import Settings
from models.cron_tables import CronJob
from models.enums import ProjectStatus
from models.tables import Event, Project
from runtime.threads import OrchestratorRuntime
from tests.fixtures.api_server import start_api, stop_api
from tests.integration.helpers import cli, scenario_variant
from tests.integration.test_sync_service import open_db, start_sync, wait_for

THREAD = "t-cronstatus01"
QUESTION = "status of hello-api?"
ANSWER = "hello-api is active: its last deploy is healthy."
STATUS_EXCHANGE = {"id": "po-cron-status", "role": "po", "when": {"contains": [QUESTION]}, "reply": {"content": ANSWER}}


@pytest.fixture()
def cron_settings(settings: Settings, tmp_path: Path) -> Settings:
    """The hello-api recording plus a PO answer to the status question the cron asks."""
    rec = scenario_variant(tmp_path / "rec", "cron", extra=[STATUS_EXCHANGE])
    return settings.model_copy(update={"model": "replay/cron", "replay_dir": rec})


async def _with_project(settings: Settings) -> None:
    db = await open_db(settings)
    try:
        async with db.session() as s:
            s.add(Project(name="hello-api", status=ProjectStatus.active, thread_id=THREAD))
    finally:
        await db.dispose()


async def _state(settings: Settings) -> tuple[list[Event], CronJob]:
    db = await open_db(settings)
    try:
        async with db.session() as s:
            events = list((await s.exec(select(Event).where(Event.subject_type == "cron").order_by(Event.id))).all())
            cron = (await s.exec(select(CronJob))).one()
    finally:
        await db.dispose()
    return events, cron


def _fired(settings: Settings, at_least: int) -> bool:
    events, _ = asyncio.run(_state(settings))
    return sum(e.to_status == "cron_fired" for e in events) >= at_least


async def _messages(settings: Settings) -> list[Any]:
    async with OrchestratorRuntime(settings) as rt:
        return list((await rt.graph.aget_state({"configurable": {"thread_id": THREAD}})).values["messages"])


@pytest.mark.slow
def test_cron_fires_on_a_seconds_level_schedule_once_with_two_sync_processes(
    cron_settings: Settings, tmp_path: Path
) -> None:
    settings = cron_settings
    asyncio.run(_with_project(settings))
    added = cli(settings, "cron", "add", "*/2 * * * * *", "--project", "hello-api", "--message", QUESTION,
                "--name", "status-check", "--json")  # fmt: skip
    assert added.returncode == 0, added.stderr
    view = json.loads(added.stdout)
    assert view["name"] == "status-check" and view["schedule"] == "*/2 * * * * *" and view["enabled"]
    assert datetime.fromisoformat(view["next_fire_at"]) - datetime.now(UTC) <= timedelta(seconds=3)

    first = start_sync(settings, tmp_path / "first")
    second: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: "sync: running" in (tmp_path / "first.err").read_text(), 60, "the first sync to run")
        second = start_sync(settings, tmp_path / "second")
        wait_for(lambda: "holds the lock; waiting" in (tmp_path / "second.err").read_text(), 60, "the second to wait")
        wait_for(lambda: _fired(settings, 3), 60, "three fires from the first process")
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 0, (tmp_path / "first.err").read_text()
        events, _ = asyncio.run(_state(settings))
        handed_over = sum(e.to_status == "cron_fired" for e in events)
        wait_for(lambda: "sync: running" in (tmp_path / "second.err").read_text(), 60, "the second to take over")
        wait_for(lambda: _fired(settings, handed_over + 2), 60, "two fires from the second process")
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0, (tmp_path / "second.err").read_text()
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()

    events, cron = asyncio.run(_state(settings))
    fired = [e for e in events if e.to_status == "cron_fired"]
    assert [e.to_status for e in events if e.to_status.startswith("cron_") and e not in fired] == ["cron_added"]
    assert len(fired) == cron.fire_seq, "every claimed fire was posted, and only once"
    assert all(e.actor == "system:cron" and e.thread_id == THREAD for e in fired)
    slots = [datetime.fromisoformat(e.reason.split("(fire of ")[1].split(")")[0]) for e in fired]
    assert len(set(slots)) == len(slots) and all(t.second % 2 == 0 for t in slots), slots  # one post per fire
    assert "crons:" in (tmp_path / "first.out").read_text() + (tmp_path / "second.out").read_text()

    messages = asyncio.run(_messages(settings))
    asked = [m for m in messages if isinstance(m, HumanMessage) and m.content == QUESTION]
    answered = [m for m in messages if isinstance(m, AIMessage) and m.content == ANSWER]
    assert len(asked) == len(fired) and len(answered) == len(fired)

    listed = cli(settings, "cron", "list", "--json")
    [row] = json.loads(listed.stdout)
    assert row["fires"] == len(fired) and row["last_outcome"] == "posted"


@pytest.mark.slow
def test_cron_commands_refuse_bad_input_and_pause_resume_delete(cron_settings: Settings) -> None:
    settings = cron_settings
    asyncio.run(_with_project(settings))
    bad = cli(settings, "cron", "add", "* * *", "--project", "hello-api", "--message", "x")
    assert bad.returncode == 2 and "has 3 fields" in bad.stderr
    unknown = cli(settings, "cron", "add", "0 2 * * *", "--project", "nope", "--message", "x")
    assert unknown.returncode == 2 and "unknown project 'nope'" in unknown.stderr
    ok = cli(settings, "cron", "add", "0 2 * * *", "--project", "hello-api", "--message", "nightly?", "--name", "night")
    assert ok.returncode == 0 and "next fire" in ok.stdout, ok.stderr
    paused = json.loads(cli(settings, "cron", "pause", "night", "--json").stdout)
    assert paused["enabled"] is False and paused["next_fire_at"] is None
    table = cli(settings, "cron", "list")
    assert "night" in table.stdout and "paused" in table.stdout
    resumed = json.loads(cli(settings, "cron", "resume", "night", "--json").stdout)
    assert datetime.fromisoformat(resumed["next_fire_at"]).time().hour == 2
    assert cli(settings, "cron", "delete", "night").returncode == 0
    gone = cli(settings, "cron", "delete", "night")
    assert gone.returncode == 2 and "unknown cron 'night'" in gone.stderr
    assert json.loads(cli(settings, "cron", "list", "--json").stdout) == []


@pytest.mark.slow
async def test_api_crons_need_the_operator_role_and_answer_with_the_next_fire(
    cron_settings: Settings, tmp_path: Path
) -> None:
    settings = cron_settings
    await _with_project(settings)
    api = start_api(settings, tmp_path / "api.log")
    try:
        async with httpx.AsyncClient(base_url=api.base_url, trust_env=False, timeout=30) as client:
            new = {"schedule": "*/5 * * * *", "project": "hello-api", "message": QUESTION, "name": "five"}
            viewer = await client.post("/crons", json=new, headers=api.headers("viewer"))
            assert viewer.status_code == 403 and "operator" in viewer.json()["detail"]
            op = api.headers("operator")
            made = await client.post("/crons", json=new, headers=op)
            assert made.status_code == 201, made.text
            assert datetime.fromisoformat(made.json()["next_fire_at"]).minute % 5 == 0
            assert (await client.post("/crons", json=new, headers=op)).status_code == 409
            unknown = await client.post("/crons", json={**new, "project": "nope", "name": "x-y-z"}, headers=op)
            assert unknown.status_code == 404
            bad = await client.post("/crons", json={**new, "schedule": "every day", "name": "bad-one"}, headers=op)
            assert bad.status_code == 422 and "fields" in bad.json()["detail"]
            listed = (await client.get("/crons", headers=op)).json()
            assert [c["name"] for c in listed] == ["five"] and listed[0]["created_by"].startswith("token:")
            paused = await client.post("/crons/five/pause", headers=op)
            assert paused.status_code == 200 and paused.json()["next_fire_at"] is None
            assert (await client.post("/crons/five/resume", headers=op)).json()["enabled"] is True
            assert (await client.delete("/crons/five", headers=op)).status_code == 204
            assert (await client.delete("/crons/five", headers=op)).status_code == 404
    finally:
        stop_api(api)
