"""The main job on real parts: run to the deploy approval, resume from another process, check DB and Event trail."""

from __future__ import annotations

import json

import httpx
import pytest
from langchain_core.messages import ToolMessage

from core.settings import Settings
from models.tables import Deployment, Event, LLMCall, PortLease, Project
from runtime.threads import OrchestratorRuntime
from tests.integration.helpers import (
    REQUEST,
    cli,
    contract_variant,
    finish_reply,
    hello_file,
    rows,
    run_turn,
    scenario_variant,
    stop_service,
    version_change,
)

pytestmark = pytest.mark.slow

HAPPY_TRAIL = [
    (None, "draft"),
    ("draft", "estimated"),
    ("estimated", "provisioning"),
    ("provisioning", "initialized"),
    ("initialized", "designing"),
    ("designing", "designed"),
    ("designed", "implementing"),  # TDD: the Tester writes the tests; IMPL 1 fails and moves nothing
    ("implementing", "implemented"),  # IMPL 2: green
    ("implemented", "verifying"),
    ("verifying", "implementing"),  # REVIEW 1 blocks
    ("implementing", "implemented"),  # IMPL 3: green
    ("implemented", "verifying"),  # REVIEW 2 approves
    ("verifying", "verified"),  # COMPLETE: signed
]
PHASES = [
    ("PLAN", "passed"),
    ("TDD", "passed"),
    ("IMPL", "failed"),
    ("IMPL", "passed"),
    ("REVIEW", "failed"),
    ("IMPL", "passed"),
    ("REVIEW", "passed"),
    ("COMPLETE", "passed"),
]


def trail(events: list[Event], thread: str) -> list[tuple[str | None, str]]:
    """The project's moves and actions by ``thread``, phase outcomes left out (PHASES checks those)."""
    return [
        (e.from_status, e.to_status)
        for e in events
        if e.subject_type == "project" and e.thread_id == thread and not e.to_status.startswith("phase_")
    ]


async def test_interrupt_then_resume_from_another_process_deploys(settings: Settings) -> None:
    events = await run_turn(settings, REQUEST, "t-main")

    started = [(ev.path, ev.node) for ev in events if ev.kind == "node_start"]
    assert ((), "zavhoz") in started and ((), "engineering") in started
    [ask] = [ev for ev in events if ev.kind == "interrupt"]
    assert ask.payload and ask.payload["kind"] == "deploy_approval"
    assert (ask.payload["tests"]["passed"], ask.payload["tests"]["failed"]) == (4, 0)
    assert [(line.split()[0], line.split()[2].rstrip(":")) for line in ask.payload["phases"]] == PHASES
    assert ask.payload["attestation"]["commit"] == ask.payload["commit"]
    assert (
        "Verified hello-api commit" in ask.payload["attested"] and ask.payload["budget"]["spent"]["calls"] == 7
    )  # PLAN, TDD, IMPL x3, REVIEW x2
    [project] = await rows(settings, Project)
    assert project.status == "verified"
    assert trail(await rows(settings, Event), "t-main") == HAPPY_TRAIL

    try:
        done = cli(settings, "resume", "t-main", "--approve")
        assert done.returncode == 0, done.stderr
        assert "hello-api is live" in done.stdout
        [project] = await rows(settings, Project)
        assert project.status == "active"
        [deployment] = await rows(settings, Deployment)
        assert deployment.status == "succeeded" and deployment.commit_sha == ask.payload["commit"]
        assert deployment.verification and deployment.verification.count(".") == 2  # the JWT it was checked against
        assert httpx.get(deployment.url, timeout=5).json()["status"] == "ok"
        assert trail(await rows(settings, Event), "t-main")[-2:] == [("verified", "deploying"), ("deploying", "active")]
        assert len(await rows(settings, PortLease)) == 1
        assert {c.role for c in await rows(settings, LLMCall)} == {"po", "architect", "developer", "tester"}

        again = cli(settings, "resume", "t-main", "--approve")
        assert again.returncode == 2 and "nothing pending" in again.stderr
    finally:
        await stop_service(settings)


async def test_reject_leaves_project_verified_and_says_so(settings: Settings) -> None:
    await run_turn(settings, REQUEST, "t-reject")
    done = cli(settings, "resume", "t-reject", "--reject", "not before the review on Monday")
    assert done.returncode == 0, done.stderr
    assert "not deployed (not before the review on Monday)" in " ".join(done.stdout.split())
    [project] = await rows(settings, Project)
    assert project.status == "verified"
    assert await rows(settings, Deployment) == []


async def test_feedback_sends_work_back_to_engineering(settings: Settings, tmp_path) -> None:
    settings = settings.model_copy(
        update={
            "model": "replay/feedback",
            "replay_dir": scenario_variant(tmp_path / "rec", "feedback", extra=version_change("add /version")),
        }
    )
    await run_turn(settings, REQUEST, "t-fb")
    done = cli(settings, "resume", "t-fb", "--answer", "add /version")
    assert done.returncode == 0, done.stderr
    async with OrchestratorRuntime(settings) as rt:
        [pending] = await rt.pending("t-fb")
    assert pending.payload["kind"] == "deploy_approval"  # back at the approval after a second Engineering pass
    assert [c.role for c in await rows(settings, LLMCall)].count(
        "architect"
    ) == 5  # plan and 2 reviews; plan and review
    assert ("verified", "designing") in trail(await rows(settings, Event), "t-fb")
    assert pending.payload["tests"]["passed"] == 5  # the new test for /version, locked with the others


async def test_stuck_loop_asks_for_guidance_and_continues_with_it(settings: Settings, tmp_path) -> None:
    guided = {
        "id": "developer-guided",
        "role": "developer",
        "when": {"contains": ["Phase IMPL", "A person looked at the stuck work", "lower-case ok"]},
        "reply": finish_reply(
            {"message": "as the person said"}, ("app.py", hello_file("developer-review-fix", "app.py"))
        ),
    }
    settings = settings.model_copy(
        update={
            "model": "replay/guide",
            "replay_dir": scenario_variant(tmp_path / "rec", "guide", extra=[guided]),
            "contract_path": contract_variant(tmp_path / "contract", IMPL=1),
        }
    )
    events = await run_turn(settings, REQUEST, "t-guide")
    [ask] = [ev for ev in events if ev.kind == "interrupt"]
    assert ask.payload and ask.payload["kind"] == "engineering_guidance"
    assert (ask.payload["phase"], ask.payload["role"]) == ("IMPL", "developer")
    assert "1 failed" in ask.payload["last_failure"] and "test_health_document" in ask.payload["last_failure"]
    [project] = await rows(settings, Project)
    assert project.status == "implementing"

    wrong = cli(settings, "resume", "t-guide", "--approve")
    assert wrong.returncode == 2 and "--answer" in wrong.stderr
    done = cli(settings, "resume", "t-guide", "--answer", "the status must be lower-case ok")
    assert done.returncode == 0, done.stderr
    async with OrchestratorRuntime(settings) as rt:
        [pending] = await rt.pending("t-guide")
    assert pending.payload["kind"] == "deploy_approval"
    [project] = await rows(settings, Project)
    assert project.status == "verified"


async def test_no_ready_server_parks_the_thread_until_resources_come(settings: Settings) -> None:
    waiting = settings.model_copy(update={"register_localhost": False})
    events = await run_turn(waiting, REQUEST, "t-wait")
    [ask] = [ev for ev in events if ev.kind == "interrupt"]
    assert ask.payload and ask.payload["kind"] == "waiting_for_resources"
    [last] = [ev for ev in events if ev.kind == "message" and ev.node == "report_to_user"]
    assert "waiting for resources" in (last.text or "")
    assert await rows(settings, PortLease) == []
    [project] = await rows(settings, Project)
    assert project.status == "verified"

    # A server appears (the runtime registers localhost on start when allowed); the resume asks Zavhoz again.
    done = cli(settings, "resume", "t-wait", "--answer", "server localhost is ready")
    assert done.returncode == 0, done.stderr
    async with OrchestratorRuntime(settings) as rt:
        [pending] = await rt.pending("t-wait")
    assert pending.payload["kind"] == "deploy_approval"
    [lease] = await rows(settings, PortLease)
    assert pending.payload["port"] == lease.port


async def test_status_question_is_answered_from_the_database(settings: Settings, tmp_path) -> None:
    settings = settings.model_copy(
        update={
            "model": "replay/status",
            "replay_dir": scenario_variant(
                tmp_path / "rec",
                "status",
                extra=[
                    {
                        "id": "po-status",
                        "role": "po",
                        "when": {"contains": ["status of hello-api"]},
                        "reply": {"tool_calls": [{"name": "get_project_status", "arguments": {"name": "hello-api"}}]},
                    },
                    {
                        "id": "po-status-answer",
                        "role": "po",
                        "when": {"contains": ['"name": "hello-api"']},
                        "reply": {"content": "hello-api is verified and waits for your deploy approval."},
                    },
                ],
            ),
        }
    )
    await run_turn(settings, REQUEST, "t-status")
    cli(settings, "resume", "t-status", "--reject", "later")
    await run_turn(settings, "What is the status of hello-api?", "t-status")
    async with OrchestratorRuntime(settings) as rt:
        state = await rt.graph.aget_state({"configurable": {"thread_id": "t-status"}})
    tool_results = [m for m in state.values["messages"] if isinstance(m, ToolMessage)]
    status = json.loads(str(tool_results[-1].content))
    assert status["status"] == "verified" and status["repo"] == "local/hello-api"
    assert any("verifying -> verified" in e for e in status["recent_events"])
    assert (
        status["budget"]["spent"]["calls"] == 8
    )  # 7 building it, 1 PO call of this turn and "calls" in status["budget"]["summary"]


async def test_two_processes_answering_at_once_resume_the_thread_once(settings: Settings) -> None:
    import subprocess
    import sys

    from tests.integration.helpers import REPO_ROOT, cli_env

    await run_turn(settings, REQUEST, "t-race")
    cmd = [sys.executable, "-m", "cli.main", "resume", "t-race", "--reject", "race"]
    procs = [
        subprocess.Popen(
            cmd, env=cli_env(settings), cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    loser = next(err for p, (_, err) in zip(procs, outs, strict=True) if p.returncode == 2)
    assert "running elsewhere" in loser or "nothing pending" in loser
    async with OrchestratorRuntime(settings) as rt:
        state = await rt.graph.aget_state({"configurable": {"thread_id": "t-race"}})
    reports = [m for m in state.values["messages"] if "is not deployed (race)" in str(m.content)]
    assert len(reports) == 1


async def test_a_po_that_keeps_calling_a_missing_tool_is_stopped_within_the_turn(settings: Settings, tmp_path) -> None:
    again = {"tool_calls": [{"name": "make_it_so", "arguments": {}}]}
    loop = [
        {"id": "po-loop", "role": "po", "when": {"contains": ["loop forever"]}, "reply": again},
        {"id": "po-loop-again", "role": "po", "when": {"contains": ["unknown tool 'make_it_so'"]}, "reply": again},
    ]
    settings = settings.model_copy(
        update={"model": "replay/loop", "replay_dir": scenario_variant(tmp_path / "rec", "loop", extra=loop)}
    )
    events = await run_turn(settings, "please loop forever", "t-loop")
    [last] = [ev.text for ev in events if ev.kind == "message"]
    assert last and "I stopped after 6 tool calls" in last and "make_it_so" in last
    assert [c.role for c in await rows(settings, LLMCall)] == ["po"] * 6
    events = await run_turn(settings, "please loop forever", "t-loop")  # the next turn starts counting again
    assert [c.role for c in await rows(settings, LLMCall)] == ["po"] * 12


async def test_a_po_that_claims_what_it_did_not_do_is_asked_again_then_corrected(settings: Settings, tmp_path) -> None:
    lie = {"content": "I've created hello-api and the teams are working on it."}
    lies = [
        {"id": "po-lie", "role": "po", "when": {"contains": ["make me hello-api"]}, "reply": lie},
        {"id": "po-lie-again", "role": "po", "when": {"contains": ["you called no tool"]}, "reply": lie},
    ]
    settings = settings.model_copy(
        update={"model": "replay/lie", "replay_dir": scenario_variant(tmp_path / "rec", "lie", extra=lies)}
    )
    events = await run_turn(settings, "make me hello-api", "t-lie")
    [said] = [ev.text for ev in events if ev.kind == "message"]
    assert said and said.startswith("I've created hello-api") and "Nothing was started: no tool was called" in said
    calls = await rows(settings, LLMCall)
    assert [(c.role, c.ok) for c in calls] == [("po", False), ("po", True)]  # the claim was questioned once
    assert 'claimed "I\'ve created" without calling its tool' in (calls[0].error or "")
    assert await rows(settings, Project) == []


async def test_two_projects_in_one_message_start_one_and_leave_no_draft(settings: Settings, tmp_path) -> None:
    both = {
        "id": "po-two",
        "role": "po",
        "when": {"contains": ["two services"]},
        "reply": {
            "tool_calls": [
                {
                    "name": "create_project_intent",
                    "arguments": {"name": "hello-api", "summary": "a small HTTP service"},
                },
                {"name": "create_project_intent", "arguments": {"name": "bye-api", "summary": "another one"}},
            ]
        },
    }
    settings = settings.model_copy(
        update={"model": "replay/two", "replay_dir": scenario_variant(tmp_path / "rec", "two", extra=[both])}
    )
    events = await run_turn(settings, "I need two services: hello-api and bye-api.", "t-two")
    assert [ev.payload["kind"] for ev in events if ev.kind == "interrupt" and ev.payload] == ["deploy_approval"]
    assert [(p.name, p.status) for p in await rows(settings, Project)] == [("hello-api", "verified")]
    async with OrchestratorRuntime(settings) as rt:
        state = await rt.graph.aget_state({"configurable": {"thread_id": "t-two"}})
    refused = [
        m for m in state.values["messages"] if isinstance(m, ToolMessage) and "one project per turn" in m.content
    ]
    assert len(refused) == 1 and "bye-api comes next" in str(refused[0].content)


async def test_guidance_can_stop_the_work(settings: Settings, tmp_path) -> None:
    settings = settings.model_copy(update={"contract_path": contract_variant(tmp_path / "contract", IMPL=1)})
    events = await run_turn(settings, REQUEST, "t-halt")
    assert [ev.payload["kind"] for ev in events if ev.kind == "interrupt" and ev.payload] == ["engineering_guidance"]
    done = cli(settings, "resume", "t-halt", "--answer", "stop")
    assert done.returncode == 0, done.stderr
    assert "Stopped work on hello-api as you asked" in " ".join(done.stdout.split())
    async with OrchestratorRuntime(settings) as rt:
        assert await rt.pending("t-halt") == []
    assert await rows(settings, Deployment) == []
