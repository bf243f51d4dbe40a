"""The tool audit log and the project budget through the real CLI (a subprocess) and the real API (uvicorn)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from core.db import Database
from core.settings import Settings
from models.enums import ProjectStatus
from models.tables import Event, Project
from services import audit, budgets
from services.budgets import BudgetLimits
from tests.fixtures.api_server import ApiServer, start_api, stop_api
from tests.integration.helpers import cli

FILE_BODY = "SECRET_MARKER = 'do-not-log-me'\n"


async def seed(settings: Settings) -> None:
    """hello-api with a budget (calls used up) and three tool calls; bare-api with neither."""
    settings.ensure_data_dir()
    db = Database(settings.db_url)
    try:
        await db.migrate()
        async with db.session() as s:
            project = Project(name="hello-api", status=ProjectStatus.implementing)
            s.add(project)
            s.add(Project(name="bare-api", status=ProjectStatus.draft))
            await s.flush()
            assert project.id is not None
            pid = project.id
            await budgets.open_budget(s, pid, BudgetLimits(tokens=10_000, cost_usd=1.0, calls=3, seconds=600))
            await budgets.charge(s, pid, tokens=1234, cost_usd=0.25, calls=3, seconds=42)
        calls = [
            ("TDD", "tester", {"path": "test_app.py", "content": FILE_BODY}, "allowed", None),
            ("IMPL", "developer", {"path": "test_app.py", "content": FILE_BODY}, "refused", "tests are locked in IMPL"),
            ("IMPL", "developer", {"path": "app.py", "content": FILE_BODY}, "allowed", None),
        ]
        for phase, role, args, outcome, reason in calls:
            await audit.record_tool_call(
                db,
                thread_id="t-1",
                project_id=pid,
                role=role,
                phase=phase,
                tool="write_file",
                args=args,
                outcome=outcome,
                reason=reason,
                duration_ms=2.5,
            )
    finally:
        await db.dispose()


async def events(settings: Settings, action: str) -> list[Event]:
    db = Database(settings.db_url)
    try:
        async with db.session() as s:
            return list((await s.exec(select(Event).where(Event.to_status == action))).all())
    finally:
        await db.dispose()


def test_cli_audit_budget_and_projects(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "160")  # the tables' width in the child (rich reads it; a pipe is 80 wide)
    asyncio.run(seed(settings))

    listed = cli(settings, "audit", "hello-api", "--json")
    assert listed.returncode == 0, listed.stderr
    trail = json.loads(listed.stdout)
    assert [(c["phase"], c["args"]["path"], c["outcome"]) for c in trail] == [
        ("TDD", "test_app.py", "allowed"),
        ("IMPL", "test_app.py", "refused"),
        ("IMPL", "app.py", "allowed"),
    ]
    assert "do-not-log-me" not in listed.stdout and trail[0]["args"]["content"].startswith("<32 bytes, sha256 ")
    impl = json.loads(cli(settings, "audit", "hello-api", "--phase", "IMPL", "--limit", "1", "--json").stdout)
    assert [c["args"]["path"] for c in impl] == ["app.py"]
    table = cli(settings, "audit", "hello-api")
    assert table.returncode == 0 and "refused" in table.stdout and "test_app.py" in table.stdout
    assert "do-not-log-me" not in table.stdout
    unknown = cli(settings, "audit", "no-such-api")
    assert unknown.returncode == 2 and "no project named 'no-such-api'" in unknown.stderr, unknown.stderr
    assert "Traceback" not in unknown.stderr

    shown = cli(settings, "budget", "hello-api", "--json")
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)["budget"]
    assert view["spent"]["calls"] == 3 and view["left"]["calls"] == 0 and view["exhausted"] == ["calls"]
    assert view["left"]["tokens"] == 10_000 - 1234
    text = cli(settings, "budget", "hello-api")
    assert text.returncode == 0 and "exhausted: calls" in text.stdout and "--add-calls" in text.stdout

    extended = cli(settings, "budget", "hello-api", "--add-calls", "5", "--add-cost", "0.5", "--json")
    assert extended.returncode == 0, extended.stderr
    after = json.loads(extended.stdout)["budget"]
    assert after["limits"]["calls"] == 8 and after["limits"]["cost_usd"] == 1.5 and after["exhausted"] == []
    trail_events = asyncio.run(events(settings, "budget_extended"))
    assert len(trail_events) == 1 and trail_events[0].actor is not None and trail_events[0].actor.startswith("cli:")
    assert "+5 calls" in trail_events[0].reason

    none_yet = cli(settings, "budget", "bare-api", "--json")
    assert none_yet.returncode == 0 and json.loads(none_yet.stdout) == {"project": "bare-api", "budget": None}
    for args in (["budget", "no-such-api"], ["budget", "no-such-api", "--add-calls", "1"]):
        missing = cli(settings, *args)
        assert missing.returncode == 2 and "no project named 'no-such-api'" in missing.stderr, args
    negative = cli(settings, "budget", "hello-api", "--add-calls", "-1")
    assert negative.returncode == 2
    assert len(asyncio.run(events(settings, "budget_extended"))) == 1, "refused extensions write nothing"

    projects = cli(settings, "projects", "--json")
    assert projects.returncode == 0, projects.stderr
    by_name = {p["name"]: p["budget"] for p in json.loads(projects.stdout)}
    assert by_name["bare-api"] is None and by_name["hello-api"]["limits"]["calls"] == 8
    table = cli(settings, "projects")
    assert table.returncode == 0 and "3/8 calls" in table.stdout, table.stdout


@pytest.fixture
def api(settings: Settings, tmp_path: Path) -> Iterator[ApiServer]:
    asyncio.run(seed(settings))
    server = start_api(settings, tmp_path / "api.log")
    try:
        yield server
    finally:
        stop_api(server)


async def test_api_audit_and_budget_routes(api: ApiServer) -> None:
    async with api.client(None) as anonymous:
        for path in ("/projects/hello-api/budget", "/projects/hello-api/audit"):
            assert (await anonymous.get(path)).status_code == 401
        assert (await anonymous.post("/projects/hello-api/budget", json={"calls": 1})).status_code == 401

    async with api.client("viewer") as viewer, api.client("approver") as approver:
        calls = await viewer.get("/projects/hello-api/audit")
        assert calls.status_code == 200
        assert [(c["phase"], c["outcome"]) for c in calls.json()] == [
            ("TDD", "allowed"),
            ("IMPL", "refused"),
            ("IMPL", "allowed"),
        ]
        assert "do-not-log-me" not in calls.text and calls.json()[1]["reason"] == "tests are locked in IMPL"
        impl = (await viewer.get("/projects/hello-api/audit", params={"phase": "IMPL", "limit": 1})).json()
        assert [c["args"]["path"] for c in impl] == ["app.py"]

        budget = await viewer.get("/projects/hello-api/budget")
        assert budget.status_code == 200 and budget.json()["exhausted"] == ["calls"]
        assert budget.json()["summary"].startswith("tokens 1,234/10,000 · cost $0.25/$1.00 · calls 3/3")

        refused = await viewer.post("/projects/hello-api/budget", json={"calls": 10})
        assert refused.status_code == 403 and "approver" in refused.json()["detail"]
        for bad in ({}, {"calls": 0}, {"calls": -1}, {"tokens": "many"}, {"calls": 1, "extra": 1}):
            assert (await approver.post("/projects/hello-api/budget", json=bad)).status_code == 422, bad

        raised = await approver.post("/projects/hello-api/budget", json={"calls": 10, "tokens": 500})
        assert raised.status_code == 200, raised.text
        assert raised.json()["limits"]["calls"] == 13 and raised.json()["limits"]["tokens"] == 10_500
        assert raised.json()["exhausted"] == []
        trail = (await viewer.get("/events", params={"subject_type": "project"})).json()
        assert [(e["to_status"], e["actor"]) for e in trail] == [("budget_extended", "token:approver")]

        listed = {p["name"]: p["budget"] for p in (await viewer.get("/projects")).json()}
        assert listed["bare-api"] is None and listed["hello-api"]["limits"]["calls"] == 13
        one = (await viewer.get("/projects/hello-api")).json()
        assert one["budget"]["spent"]["calls"] == 3

        assert (await viewer.get("/projects/bare-api/budget")).status_code == 404
        opened = await approver.post("/projects/bare-api/budget", json={"seconds": 60})
        assert opened.status_code == 200 and opened.json()["spent"]["calls"] == 0, "opened at the defaults, raised"

        for method, path, body in [
            ("GET", "/projects/no-such-api/audit", None),
            ("GET", "/projects/no-such-api/budget", None),
            ("POST", "/projects/no-such-api/budget", {"calls": 1}),
        ]:
            response = await approver.request(method, path, json=body)
            assert response.status_code == 404 and "unknown project" in response.json()["detail"], (method, path)
