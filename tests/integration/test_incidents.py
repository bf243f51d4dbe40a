"""Incidents reach the person on their next turn; asking to fix one runs a recovery that checks reality again."""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import ToolMessage

from core.db import Database
from core.settings import Settings
from infra.forge.local import LocalForge
from models.enums import ProjectStatus
from models.tables import Event, Incident, Project
from runtime.threads import OrchestratorRuntime
from tests.integration.helpers import rows, run_turn, scenario_variant

pytestmark = pytest.mark.slow

FIX_EXCHANGES = [
    {
        "id": "po-fix",
        "role": "po",
        "when": {"contains": ["fix incident 1"]},
        "reply": {"tool_calls": [{"name": "fix_incident", "arguments": {"incident_id": 1}}]},
    },
    {
        "id": "po-fix-done",
        "role": "po",
        "when": {"contains": ['"incident": 1']},
        "reply": {"content": "I ran the recovery for incident 1."},
    },
    {"id": "po-hello", "role": "po", "when": {"contains": ["anything new?"]}, "reply": {"content": "Nothing new."}},
]


@pytest.fixture()
def fix_settings(settings: Settings, tmp_path) -> Settings:
    return settings.model_copy(
        update={"model": "replay/fix", "replay_dir": scenario_variant(tmp_path / "rec", "fix", extra=FIX_EXCHANGES)}
    )


async def seed_missing_project(settings: Settings, *, recreate: bool) -> int:
    """A project whose repository (id 999) was confirmed gone, with its open critical incident."""
    settings.ensure_data_dir()
    db = Database(settings.db_url)
    await db.migrate()
    async with db.session() as s:
        project = Project(
            name="hello-api", status=ProjectStatus.missing, github_repo_id=999, repo_full_name="local/hello-api"
        )
        s.add(project)
        await s.flush()
        s.add(
            Incident(
                kind="repo_missing",
                severity="critical",
                subject_type="project",
                subject_id=project.id or 0,
                message="repository local/hello-api (id 999) answers 404",
            )
        )
    await db.dispose()
    if recreate:
        LocalForge(settings.data_dir / "forge").create_repo("hello-api", "re-created")
    return project.id or 0


def tool_result(state_messages: list) -> dict:
    return json.loads(str([m for m in state_messages if isinstance(m, ToolMessage)][-1].content))


async def test_incident_is_told_then_fixed_by_relinking_the_recreated_repository(fix_settings: Settings) -> None:
    pid = await seed_missing_project(fix_settings, recreate=True)

    events = await run_turn(fix_settings, "Please fix incident 1", "t-fix")

    told = [ev.text for ev in events if ev.kind == "message" and ev.node == "surface_incidents"]
    assert told and "#1 [critical] repository local/hello-api (id 999) answers 404" in told[0]
    async with OrchestratorRuntime(fix_settings) as rt:
        state = await rt.graph.aget_state({"configurable": {"thread_id": "t-fix"}})
    outcome = tool_result(state.values["messages"])
    assert outcome["resolved"] is True and "re-linked" in outcome["outcome"]
    [project] = await rows(fix_settings, Project)
    assert project.id == pid and project.status == "initialized" and project.github_repo_id != 999
    [incident] = await rows(fix_settings, Incident)
    assert incident.resolved_at is not None and incident.surfaced_at is not None
    trail = [(e.from_status, e.to_status) for e in await rows(fix_settings, Event) if e.subject_type == "project"]
    assert trail == [("missing", "initialized")]

    again = await run_turn(fix_settings, "anything new?", "t-fix")
    assert not [ev for ev in again if ev.node == "surface_incidents" and ev.kind == "message"]


async def test_a_recovery_that_reality_does_not_confirm_leaves_the_incident_open(fix_settings: Settings) -> None:
    await seed_missing_project(fix_settings, recreate=False)
    await run_turn(fix_settings, "Please fix incident 1", "t-nofix")
    async with OrchestratorRuntime(fix_settings) as rt:
        state = await rt.graph.aget_state({"configurable": {"thread_id": "t-nofix"}})
    outcome = tool_result(state.values["messages"])
    assert outcome["resolved"] is False and "no repository named 'hello-api'" in outcome["outcome"]
    [incident] = await rows(fix_settings, Incident)
    assert incident.resolved_at is None
    [project] = await rows(fix_settings, Project)
    assert project.status == "missing"


async def test_relink_refuses_a_repository_another_project_already_owns(fix_settings: Settings) -> None:
    await seed_missing_project(fix_settings, recreate=True)
    repo = LocalForge(fix_settings.data_dir / "forge").get_repo("hello-api")
    assert repo is not None
    db = Database(fix_settings.db_url)
    async with db.session() as s:  # the sync adopted the re-created repository as a discovered project
        s.add(Project(name="hello-api-2", status=ProjectStatus.discovered, github_repo_id=repo.id))
    await db.dispose()

    await run_turn(fix_settings, "Please fix incident 1", "t-owned")
    async with OrchestratorRuntime(fix_settings) as rt:
        state = await rt.graph.aget_state({"configurable": {"thread_id": "t-owned"}})
    outcome = tool_result(state.values["messages"])
    assert outcome["resolved"] is False and "already belongs to project 'hello-api-2'" in outcome["outcome"]
    [incident] = await rows(fix_settings, Incident)
    assert incident.resolved_at is None


async def test_fixing_a_server_down_incident_rechecks_the_server(fix_settings: Settings) -> None:
    from sqlmodel import select

    from models.enums import ServerStatus
    from models.tables import Server
    from models.transitions import transition_server

    fix_settings.ensure_data_dir()
    async with OrchestratorRuntime(fix_settings):  # migrates and registers localhost (ready)
        pass
    db = Database(fix_settings.db_url)
    async with db.session() as s:
        server = (await s.exec(select(Server).where(Server.name == "localhost"))).one()
        await transition_server(s, server.id or 0, ServerStatus.error, reason="3 failed checks")
        s.add(
            Incident(
                kind="server_down",
                severity="critical",
                subject_type="server",
                subject_id=server.id or 0,
                message="server localhost failed 3 checks in a row",
            )
        )
    await db.dispose()

    await run_turn(fix_settings, "Please fix incident 1", "t-server")
    async with OrchestratorRuntime(fix_settings) as rt:
        state = await rt.graph.aget_state({"configurable": {"thread_id": "t-server"}})
    outcome = tool_result(state.values["messages"])
    assert outcome["resolved"] is True and "answers its check again" in outcome["outcome"]
    [server] = await rows(fix_settings, Server)
    assert server.status == "ready" and server.facts and server.facts["uptime_s"] > 0
    [incident] = await rows(fix_settings, Incident)
    assert incident.resolved_at is not None
