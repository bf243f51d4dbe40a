"""A thread's administration: its history, a cancel of a stuck or running run, archiving.

Real parts only: the API (`orchestrator api` on 127.0.0.1, keys made by `orchestrator token create`), the CLI in
other processes, a real SQLite data dir, and the PO model served over real HTTP by the OpenAI-format fake of
tests/fixtures/openai_server.py. The fake either fails every request (a thread whose model call always fails, so
its run stops mid-way for good) or holds its answer to the FIRST message's model call until the test lets it go (a
run in progress when the cancel comes; the cancel's stop request is seen as the file beside the thread's lock).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.messages import HumanMessage
from pydantic import SecretStr
from sqlmodel import select

from api.console.traces import runs_of
from core.db import Database
from core.replay import Scenario
from core.settings import Settings
from models.enums import ProjectStatus
from models.tables import Project
from models.time_tables import Run as RunRow
from runtime.multitask import NOT_RUN
from runtime.threads import OrchestratorRuntime
from services.identities import cli_identity
from tests.conftest import REPO_ROOT
from tests.fixtures.api_server import ApiServer, make_key, orchestrator_env, start_api, stop_api
from tests.integration.helpers import cli, cli_env
from tests.integration.test_double_texting import API_KEY, GatedServer, Run, record, until_asked_to_stop

pytestmark = pytest.mark.slow  # an API process, CLI processes and real runs: seconds each

FIRST = "FIRST: which projects exist?"
SCENARIO = {
    "name": "thread-admin",
    "exchanges": [
        {
            "id": "first",
            "role": "po",
            "when": {"contains": ["FIRST"]},
            "reply": {"content": "", "tool_calls": [{"name": "list_projects", "arguments": {}}]},
        },
        {"id": "listed", "role": "po", "when": {"contains": ["[]"]}, "reply": {"content": "ANSWER-FIRST"}},
        {"id": "second", "role": "po", "when": {"contains": ["SECOND"]}, "reply": {"content": "ANSWER-SECOND [/x]"}},
        {"id": "stuck", "role": "po", "when": {"contains": ["STUCK"]}, "reply": {"content": "ANSWER-STUCK"}},
    ],
}


@pytest.fixture
def model(tmp_path: Path) -> Iterator[GatedServer]:
    (tmp_path / "admin.json").write_text(json.dumps(SCENARIO))
    srv = GatedServer(Scenario.load(tmp_path / "admin.json"), api_key=API_KEY)
    with srv:
        try:
            yield srv
        finally:
            srv.gate.set()  # a held request lets go before the server closes


@pytest.fixture
def cfg(settings: Settings, model: GatedServer) -> Settings:
    update = {"model": "openai/po", "api_base": model.base_url + "/v1", "api_key": SecretStr(API_KEY), "llm_retries": 0}
    return settings.model_copy(update=update)


@pytest.fixture
async def api(cfg: Settings, tmp_path: Path) -> AsyncIterator[ApiServer]:
    env = {"ORCH_MODEL": cfg.model, "ORCH_API_BASE": str(cfg.api_base), "ORCH_API_KEY": API_KEY}
    env["ORCH_LLM_RETRIES"] = "0"
    server = await asyncio.to_thread(start_api, cfg, tmp_path / "api.log", roles=False, **env)
    for name, role in (("operator", "operator"), ("operator-2", "operator"), ("viewer", "viewer")):
        server.keys[name] = await asyncio.to_thread(make_key, cfg.data_dir, name, role, orchestrator_env(cfg, **env))
    try:
        yield server
    finally:
        stop_api(server)


def history(page: dict[str, Any]) -> list[tuple[Any, ...]]:
    """``(index, role, text, tool_calls)`` of each message of a ``GET /threads/{id}/messages`` page."""
    return [(m["index"], m["role"], m["text"], m["tool_calls"]) for m in page["messages"]]


async def refused_to_others(api: ApiServer, thread_id: str) -> None:
    """Another operator gets 404 on every thread-admin route of ``thread_id``; a viewer may not change it (403)."""
    async with api.client("operator-2") as theirs, api.client("viewer") as viewer:
        calls: list[tuple[str, str, dict[str, Any] | None]] = [
            ("GET", f"/threads/{thread_id}/messages", None),
            ("DELETE", f"/threads/{thread_id}", None),
            ("POST", f"/threads/{thread_id}/cancel", {}),
        ]
        for method, path, body in calls:
            response = await theirs.request(method, path, json=body)
            assert response.status_code == 404 and "unknown thread" in response.json()["detail"], (method, path)
        assert (await viewer.get(f"/threads/{thread_id}/messages")).status_code == 404, "a viewer sees only its own"
        assert (await viewer.post(f"/threads/{thread_id}/cancel", json={})).status_code == 403
        assert (await viewer.delete(f"/threads/{thread_id}")).status_code == 403


async def add_project(cfg: Settings, thread_id: str) -> None:
    """A project in the middle of its work, on ``thread_id`` (as the PO's create_project_intent leaves one)."""
    db = Database(cfg.db_url)
    try:
        async with db.session() as s:
            s.add(Project(name="stuck-app", status=ProjectStatus.implementing, thread_id=thread_id))
    finally:
        await db.dispose()


async def test_a_thread_whose_model_always_fails_is_cancelled_and_a_new_message_starts_afresh(
    api: ApiServer, model: GatedServer, cfg: Settings
) -> None:
    model.gate.set()
    model.fail_with(500)
    async with api.client("operator", timeout=120) as client:
        thread_id = (await client.post("/threads")).json()["thread_id"]
        stuck = await Run(client, thread_id, {"text": "STUCK: which projects?"}).done()
        assert stuck.kinds()[-1] == "error", stuck.events
        again = await Run(client, thread_id, {"text": "SECOND question"}).done()
        assert again.status == 409 and "stopped mid-run" in again.detail and "thread cancel" in again.detail
        await refused_to_others(api, thread_id)
        await add_project(cfg, thread_id)

        cancelled = await client.post(f"/threads/{thread_id}/cancel", json={"reason": "the model is down"})

        assert cancelled.status_code == 200, cancelled.text
        outcome = cancelled.json()
        assert (outcome["outcome"], outcome["project"], outcome["project_status"]) == (
            "abandoned",
            "stuck-app",
            "implementing",
        )
        assert "abandoned" in outcome["message"] and "orchestrator cancel stuck-app" in outcome["message"]
        row = await record(cfg, thread_id)
        assert (row.stopped_mid_run, row.pending) == (False, [])
        twice = await client.post(f"/threads/{thread_id}/cancel")
        assert twice.status_code == 409 and "cancelled already" in twice.json()["detail"]
        go_on = await client.post(f"/threads/{thread_id}/continue")
        assert go_on.status_code == 409 and "was cancelled, so it is not continued" in go_on.json()["detail"]
        resumed = await asyncio.to_thread(cli, cfg, "resume", thread_id)
        assert resumed.returncode == 2 and "not continued" in resumed.stderr, resumed.stdout + resumed.stderr
        assert (await record(cfg, thread_id)).stopped_mid_run is False, "the refusals changed nothing"
        project = await asyncio.to_thread(cli, cfg, "cancel", "stuck-app", "--reason", "not needed", "--json")
        assert project.returncode == 0, project.stdout + project.stderr
        assert "stuck-app is cancelled" in project.stdout, "settled at once: the abandoned run is not continued"
        trail = (await client.get("/events", params={"subject_type": "project"})).json()
        mine = [e for e in trail if e["to_status"] == "run_cancelled"]
        assert len(mine) == 1 and mine[0]["actor"] == "token:operator" and "the model is down" in mine[0]["reason"]
        assert mine[0]["thread_id"] == thread_id

        model.fail_with(500, count=0)  # the model answers again
        fresh = await Run(client, thread_id, {"text": "SECOND question"}).done()

        assert fresh.status == 200 and fresh.kinds()[-1] == "done" and fresh.said() == ["ANSWER-SECOND [/x]"]
        assert fresh.ended() == ["surface_incidents", "call_po"], "the new message ran from START"
        page = (await client.get(f"/threads/{thread_id}/messages")).json()
        assert history(page) == [
            (0, "human", "STUCK: which projects?", []),
            (1, "human", "SECOND question", []),
            (2, "ai", "ANSWER-SECOND [/x]", []),
        ]
        assert (page["total"], page["earlier"]) == (3, None)
        latest = (await client.get(f"/threads/{thread_id}/messages", params={"limit": 2})).json()
        assert [m["index"] for m in latest["messages"]] == [1, 2] and latest["earlier"] == 1
        older = (await client.get(f"/threads/{thread_id}/messages", params={"limit": 2, "before": 1})).json()
        assert [m["index"] for m in older["messages"]] == [0] and older["earlier"] is None
        for bad in ({"limit": 0}, {"limit": 501}, {"before": -1}):
            assert (await client.get(f"/threads/{thread_id}/messages", params=bad)).status_code == 422, bad
        done = await client.post(f"/threads/{thread_id}/cancel", json={})
        assert done.status_code == 409 and "no run to cancel" in done.json()["detail"]
        unknown = await client.post("/threads/t-000000000000/cancel", json={})
        assert unknown.status_code == 404


async def test_a_run_in_progress_is_cancelled_from_another_process(
    api: ApiServer, model: GatedServer, cfg: Settings
) -> None:
    async with api.client("operator", timeout=120) as client:
        thread_id = (await client.post("/threads")).json()["thread_id"]
        first = Run(client, thread_id, {"text": FIRST})
        assert await asyncio.to_thread(model.arrived.wait, 60), "the run reached its model call"
        busy = await client.delete(f"/threads/{thread_id}")
        assert busy.status_code == 409 and "running elsewhere" in busy.json()["detail"]
        assert "thread cancel" in busy.json()["detail"]

        cancel = asyncio.create_task(
            asyncio.to_thread(cli, cfg, "thread", "cancel", thread_id, "--json", "--reason", "changed my mind")
        )
        await until_asked_to_stop(cfg.data_dir, thread_id)
        model.gate.set()
        done = await cancel
        await first.done()

        assert done.returncode == 0, done.stderr
        outcome = json.loads(done.stdout)
        assert (outcome["outcome"], outcome["thread_id"], outcome["project"]) == ("stopped", thread_id, None)
        assert first.kinds()[-1] == "drained" and "cancelled" in first.events[-1]["text"], first.events
        assert first.ended() == ["surface_incidents", "call_po"], "stopped at the superstep after its model call"
        assert "ANSWER-FIRST" not in first.said()
        listed = {t["id"]: t for t in (await client.get("/threads")).json()}
        assert (listed[thread_id]["stopped_mid_run"], listed[thread_id]["pending"]) == (False, [])

        second = await Run(client, thread_id, {"text": "SECOND question"}).done()

        assert second.status == 200 and second.said() == ["ANSWER-SECOND [/x]"], second.events
        assert second.ended() == ["surface_incidents", "call_po"], "the new message ran from START"
        page = (await client.get(f"/threads/{thread_id}/messages")).json()
    assert history(page) == [
        (0, "human", FIRST, []),
        (1, "ai", "", ["list_projects"]),
        (2, "tool", f"list_projects: {NOT_RUN}", []),
        (3, "human", "SECOND question", []),
        (4, "ai", "ANSWER-SECOND [/x]", []),
    ]
    shown = await asyncio.to_thread(cli, cfg, "thread", "messages", thread_id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert [(m["index"], m["role"], m["text"]) for m in json.loads(shown.stdout)["messages"]] == [
        (i, role, text) for i, role, text, _ in history(page)
    ]
    table = await asyncio.to_thread(cli, cfg, "thread", "messages", thread_id)
    assert table.returncode == 0 and "ANSWER-SECOND [/x]" in table.stdout, "printed literally"


async def test_an_archived_thread_leaves_the_listings_and_takes_no_message(
    api: ApiServer, model: GatedServer, cfg: Settings
) -> None:
    model.gate.set()
    async with api.client("operator", timeout=120) as client:
        thread_id = (await client.post("/threads")).json()["thread_id"]
        kept = (await client.post("/threads")).json()["thread_id"]
        said = await Run(client, thread_id, {"text": "SECOND question"}).done()
        assert said.said() == ["ANSWER-SECOND [/x]"]
        await refused_to_others(api, thread_id)

        archived = await client.delete(f"/threads/{thread_id}")

        assert archived.status_code == 204 and archived.content == b""
        listed = [t["id"] for t in (await client.get("/threads")).json()]
        assert thread_id not in listed and kept in listed
        every = {t["id"]: t for t in (await client.get("/threads", params={"include_archived": "true"})).json()}
        assert every[thread_id]["archived_at"] is not None and every[kept]["archived_at"] is None
        refused = await Run(client, thread_id, {"text": "SECOND again"}).done()
        assert refused.status == 409 and "thread archived" in refused.detail and "new thread" in refused.detail
        assert (await client.delete(f"/threads/{thread_id}")).status_code == 204, "archiving again changes nothing"
        page = (await client.get(f"/threads/{thread_id}/messages")).json()
        assert history(page) == [(0, "human", "SECOND question", []), (1, "ai", "ANSWER-SECOND [/x]", [])]
        assert (await client.delete("/threads/t-000000000000")).status_code == 404

    plain = await asyncio.to_thread(cli, cfg, "threads", "--json")
    assert plain.returncode == 0, plain.stderr
    assert thread_id not in [t["id"] for t in json.loads(plain.stdout)]
    with_archived = await asyncio.to_thread(cli, cfg, "threads", "--json", "--archived")
    shown = {t["id"]: t for t in json.loads(with_archived.stdout)}
    assert shown[thread_id]["archived_at"] is not None and shown[kept]["archived_at"] is None
    table = await asyncio.to_thread(cli, cfg, "threads", "--archived")
    assert "archived" in table.stdout
    again = await asyncio.to_thread(cli, cfg, "thread", "archive", kept, "--json")
    assert again.returncode == 0 and json.loads(again.stdout) == {"thread_id": kept, "archived": True, "changed": True}
    stale = await asyncio.to_thread(cli, cfg, "chat", "--thread", kept, "-m", "SECOND hello")
    assert stale.returncode == 2 and "thread archived" in " ".join(stale.stderr.split())
    unknown = await asyncio.to_thread(cli, cfg, "thread", "cancel", "t-nope")
    assert unknown.returncode == 2 and "unknown thread" in unknown.stderr
    async with httpx.AsyncClient(base_url=api.base_url, trust_env=False) as anonymous:
        assert (await anonymous.get(f"/threads/{thread_id}/messages")).status_code == 401


async def park_at_a_question(cfg: Settings, thread_id: str) -> None:
    """Leave ``thread_id`` waiting at a real interrupt (a resource wait), through the runtime's own run path.

    The thread's state is set as the report step leaves a project still waiting for a server (LangGraph's
    ``update_state`` as that node), then ``continue_run`` runs the rest: ``wait_for_resources`` asks its question.
    """
    values = {
        "messages": [HumanMessage("PARKED: a project")],
        "project_name": "parked-app",
        "project_id": None,
        "zavhoz_status": "waiting_for_resources",
        "engineering": {"status": "verified"},
    }
    async with OrchestratorRuntime(cfg) as rt:
        await rt.graph.aupdate_state({"configurable": {"thread_id": thread_id}}, values, as_node="report_to_user")
        events = [ev async for ev in rt.continue_run(thread_id, actor=cli_identity())]
    assert [ev.kind for ev in events][-2:] == ["interrupt", "done"], events


async def test_a_thread_waiting_for_an_answer_is_neither_archived_nor_cancelled(
    api: ApiServer, model: GatedServer, cfg: Settings
) -> None:
    async with api.client("operator", timeout=120) as client:
        thread_id = (await client.post("/threads")).json()["thread_id"]
        await park_at_a_question(cfg, thread_id)
        for method, path in (("DELETE", f"/threads/{thread_id}"), ("POST", f"/threads/{thread_id}/cancel")):
            refused = await client.request(method, path, json={})
            assert refused.status_code == 409, (method, refused.text)
            detail = refused.json()["detail"]
            assert "waits for an answer" in detail and "waiting_for_resources" in detail and "resume" in detail
        listed = {t["id"]: t for t in (await client.get("/threads")).json()}
        assert [p["payload"]["kind"] for p in listed[thread_id]["pending"]] == ["waiting_for_resources"]
        assert listed[thread_id]["archived_at"] is None, "nothing changed"
        page = (await client.get(f"/threads/{thread_id}/messages")).json()
        assert history(page) == [(0, "human", "PARKED: a project", [])]
    cancelled = await asyncio.to_thread(cli, cfg, "thread", "cancel", thread_id)
    assert cancelled.returncode == 2 and "waits for an answer" in " ".join(cancelled.stderr.split())


async def test_a_run_whose_process_was_killed_reads_as_lost_and_the_thread_goes_on(
    model: GatedServer, cfg: Settings
) -> None:
    """kill -9 mid-run leaves a run row with no outcome: its readers settle it as lost instead of running forever."""
    chat = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "chat", "-m", FIRST],
        env=cli_env(cfg),
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert await asyncio.to_thread(model.arrived.wait, 120), "the run reached its model call"
        db = Database(cfg.db_url)
        async with db.session() as s:
            (run,) = (await s.exec(select(RunRow))).all()
        assert (run.outcome, run.pid) == (None, chat.pid)
        alive = await asyncio.to_thread(cli, cfg, "runs", run.thread_id, "--json")
        assert [r["outcome"] for r in json.loads(alive.stdout)] == [None], "its process lives: it is running"
    finally:
        chat.kill()
        chat.wait()

    listed = await asyncio.to_thread(cli, cfg, "runs", run.thread_id, "--json")
    assert listed.returncode == 0, listed.stderr
    (lost,) = json.loads(listed.stdout)
    assert lost["outcome"] == "lost" and f"pid {chat.pid}" in lost["error"], lost
    assert [r.outcome for r in await runs_of(db, run.thread_id)] == ["lost"], "the console reads it the same"

    model.gate.set()
    went_on = await asyncio.to_thread(cli, cfg, "resume", run.thread_id)
    assert went_on.returncode == 0 and "ANSWER-FIRST" in went_on.stdout, went_on.stdout + went_on.stderr
    await db.dispose()
    shown = json.loads((await asyncio.to_thread(cli, cfg, "runs", run.thread_id, "--json")).stdout)
    assert [(r["kind"], r["outcome"]) for r in shown] == [("continue", "done"), ("message", "lost")], shown
