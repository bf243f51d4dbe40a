"""The contract through the whole graph: a second service of another shape, a deploy of something that was not
verified, the budget running out (both answers), a broken contract at start-up, and the audit trail it leaves."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from core.settings import Settings
from infra.git import run_git
from models.tables import Budget, Deployment, Event, Project, ToolCall
from runtime.threads import OrchestratorRuntime
from services.identities import cli_identity
from tests.integration.helpers import REQUEST, cli, contract_variant, rows, run_turn, stop_service

pytestmark = pytest.mark.slow


def actions(events: list[Event]) -> list[str]:
    return [e.to_status for e in events if e.subject_type == "project"]


async def test_another_service_runs_through_the_same_contract_and_deploys(settings: Settings) -> None:
    """todo-api: Flask (a third-party dependency), server.py, /healthz, tests run by ``pytest -q tests``."""
    settings = settings.model_copy(update={"model": "replay/todo-api"})
    try:
        events = await run_turn(settings, "I need a to-do service called todo-api.", "t-todo")
        [ask] = [e for e in events if e.kind == "interrupt"]
        assert ask.payload is not None and ask.payload["kind"] == "deploy_approval"
        assert [line.split()[0] for line in ask.payload["phases"]] == ["PLAN", "TDD", "IMPL", "REVIEW", "COMPLETE"]
        assert ask.payload["tests"]["command"].startswith("pytest -q tests") and ask.payload["tests"]["passed"] == 3
        assert ask.payload["url"].endswith("/healthz")
        done = cli(settings, "resume", "t-todo", "--approve")
        assert done.returncode == 0, done.stderr
        [deployment] = await rows(settings, Deployment)
        assert deployment.status == "succeeded" and deployment.entrypoint == "server.py"
        assert httpx.get(deployment.url or "", timeout=5).json()["service"] == "todo-api"
        audit = cli(settings, "audit", "todo-api", "--json")
        assert audit.returncode == 0, audit.stderr
        calls = json.loads(audit.stdout)
        assert {(c["phase"], c["tool"]) for c in calls} >= {("TDD", "write_file"), ("IMPL", "write_file")}
        assert all("flask" not in json.dumps(c.get("args")) or c["tool"] != "write_file" for c in calls)
    finally:
        await stop_service(settings, "todo-api")


async def test_a_deploy_of_a_commit_pushed_after_verification_is_refused(settings: Settings) -> None:
    await run_turn(settings, REQUEST, "t-late")
    bare = settings.data_dir / "forge" / "hello-api.git"
    other = settings.data_dir / "elsewhere"
    run_git("clone", "--quiet", str(bare), str(other))
    (other / "app.py").write_text("print('not what was tested')\n")
    run_git("commit", "--quiet", "-am", "pushed after verification", cwd=other)
    run_git("push", "--quiet", "origin", "HEAD:main", cwd=other)
    late = run_git("rev-parse", "HEAD", cwd=other)
    async with OrchestratorRuntime(settings) as rt:  # the thread's state is made to name the new commit
        config = {"configurable": {"thread_id": "t-late"}}
        state = await rt.graph.aget_state(config)  # type: ignore[arg-type]
        eng = {**state.values["engineering"], "commit": late}
        await rt.graph.aupdate_state(config, {"engineering": eng}, as_node="join_teams")  # type: ignore[arg-type]
        asked = [ev async for ev in rt.continue_run("t-late", actor=cli_identity())]
    assert [ev.payload["commit"] for ev in asked if ev.kind == "interrupt" and ev.payload] == [late]
    done = cli(settings, "resume", "t-late", "--approve")
    assert done.returncode == 0, done.stderr
    assert "a commit pushed after verification is not verified" in " ".join(done.stdout.split())
    assert await rows(settings, Deployment) == []
    [project] = await rows(settings, Project)
    assert project.status == "verified"
    [refusal] = [e for e in await rows(settings, Event) if e.to_status == "deploy_refused"]
    assert late[:10] in refusal.reason and refusal.actor


async def test_a_spent_budget_asks_and_stop_ends_the_work(settings: Settings) -> None:
    settings = settings.model_copy(update={"budget_calls": 3})  # PLAN, TDD, the first IMPL round
    events = await run_turn(settings, REQUEST, "t-stop")
    [ask] = [e for e in events if e.kind == "interrupt"]
    assert ask.payload is not None and ask.payload["kind"] == "budget_exhausted"
    assert ask.payload["exhausted"] == ["calls"] and ask.payload["budget"]["spent"]["calls"] == 3
    done = cli(settings, "resume", "t-stop", "--reject", "enough")
    assert done.returncode == 0, done.stderr
    assert "Stopped work on hello-api as you asked" in " ".join(done.stdout.split())
    assert await rows(settings, Deployment) == []
    assert "budget_stopped" in actions(await rows(settings, Event))
    async with OrchestratorRuntime(settings) as rt:
        assert await rt.pending("t-stop") == []


async def test_a_spent_budget_asks_and_an_extension_goes_on(settings: Settings) -> None:
    settings = settings.model_copy(update={"budget_calls": 3})
    await run_turn(settings, REQUEST, "t-more")
    once = cli(settings, "resume", "t-more", "--approve")  # one more default budget of calls: 3 more
    assert once.returncode == 0, once.stderr
    async with OrchestratorRuntime(settings) as rt:
        [pending] = await rt.pending("t-more")
    assert pending.payload["kind"] == "budget_exhausted" and pending.payload["budget"]["limits"]["calls"] == 6
    bad = cli(settings, "resume", "t-more", "--answer", "lots please")
    assert bad.returncode == 2 and "calls=20" in bad.stderr
    more = cli(settings, "resume", "t-more", "--answer", "calls=10")
    assert more.returncode == 0, more.stderr
    async with OrchestratorRuntime(settings) as rt:
        [pending] = await rt.pending("t-more")
    assert pending.payload["kind"] == "deploy_approval"
    [budget] = await rows(settings, Budget)
    assert (budget.limit_calls, budget.spent_calls) == (16, 7)
    sets = [e for e in await rows(settings, Event) if e.to_status == "budget_set"]
    assert len(sets) == 2 and all(e.actor and e.actor.startswith("cli:") for e in sets)


async def test_a_broken_contract_stops_the_start_naming_its_line(settings: Settings, tmp_path: Path) -> None:
    path = contract_variant(tmp_path / "c")
    lines = path.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("gate: tests_red"))
    lines[at] = lines[at].replace("tests_red", "tests_reddish")
    path.write_text("\n".join(lines) + "\n")
    settings.ensure_data_dir()
    done = cli(settings.model_copy(update={"contract_path": path}), "resume", "t-none", "--approve")
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert f"contract.yaml:{at + 1}:" in message and "tests_reddish" in message


async def test_every_tool_call_of_the_demo_is_on_the_audit_trail(settings: Settings) -> None:
    await run_turn(settings, REQUEST, "t-audit")
    calls = await rows(settings, ToolCall)
    assert [(c.phase, c.tool) for c in calls if c.tool != "finish"] == [
        ("TDD", "write_file"),
        ("IMPL", "write_file"),
        ("IMPL", "write_file"),
        ("IMPL", "write_file"),
    ]
    assert all(c.outcome == "allowed" and c.thread_id == "t-audit" for c in calls)
    written = [c.args for c in calls if c.tool == "write_file"]
    assert all("content" in a and "bytes, sha256" in a["content"] for a in written)  # never the file itself
    shown = cli(settings, "audit", "hello-api", "--json")
    assert shown.returncode == 0, shown.stderr
    assert [(c["phase"], c["tool"]) for c in json.loads(shown.stdout)] == [(c.phase, c.tool) for c in calls]
