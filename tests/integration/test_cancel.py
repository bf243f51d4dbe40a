"""Cancelling a project's work in flight, wherever its thread is: stuck at a question, waiting for a server, stopped
by a model error, or running in another process. Each ends with the project consistent, no further model call, and
the trail naming who cancelled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core.llm_failures import ModelUnreachable
from core.settings import Settings
from models.enums import AccessRole
from models.tables import Deployment, Event, LLMCall, PortLease, Project, ToolCall
from runtime.threads import NotAllowed, OrchestratorRuntime, RunEvent
from services.identities import Identity, cli_identity
from tests.fixtures.api_server import start_api, stop_api
from tests.integration.helpers import REPO_ROOT, REQUEST, cli, contract_variant, rows, run_turn

pytestmark = pytest.mark.slow
ALICE = Identity(name="token:alice", role=AccessRole.approver)


def stuck(settings: Settings, tmp_path: Path) -> Settings:
    """IMPL gets one round: the recorded first version fails a test, so the loop asks a person for guidance."""
    return settings.model_copy(update={"contract_path": contract_variant(tmp_path / "contract", IMPL=1)})


async def thread_said(settings: Settings, thread_id: str) -> str:
    async with OrchestratorRuntime(settings) as rt:
        state = await rt.graph.aget_state({"configurable": {"thread_id": thread_id}})
    return str(state.values["messages"][-1].content)


def actions(events: list[Event]) -> list[tuple[str | None, str, str | None]]:
    return [(e.from_status, e.to_status, e.actor) for e in events if e.subject_type == "project"]


async def assert_cancelled(settings: Settings, by: str) -> None:
    [project] = await rows(settings, Project)
    assert project.status == "cancelled"
    assert (project.port, project.cancel_requested_by) == (None, None)
    assert await rows(settings, PortLease) == []
    assert await rows(settings, Deployment) == []
    trail = actions(await rows(settings, Event))
    assert (None, "cancel_requested", by) in trail
    assert any(to == "cancelled" and actor == by for _, to, actor in trail), trail


async def test_a_stuck_loop_is_cancelled_from_the_command_line(settings: Settings, tmp_path: Path) -> None:
    settings = stuck(settings, tmp_path)
    events = await run_turn(settings, REQUEST, "t-stuck")
    assert [ev.payload["kind"] for ev in events if ev.kind == "interrupt" and ev.payload] == ["engineering_guidance"]
    calls_before = len(await rows(settings, LLMCall))

    done = cli(settings, "cancel", "hello-api", "--reason", "not needed any more", "--json")

    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert (outcome["project"], outcome["status"], outcome["stopped"]) == ("hello-api", "cancelled", True)
    me = cli_identity().name
    await assert_cancelled(settings, me)
    [asked] = [e for e in await rows(settings, Event) if e.to_status == "cancel_requested"]
    assert asked.reason == "implementing: not needed any more"
    assert len(await rows(settings, LLMCall)) == calls_before  # stopping asked no model anything
    async with OrchestratorRuntime(settings) as rt:
        assert await rt.pending("t-stuck") == []
    said = await thread_said(settings, "t-stuck")
    assert "Stopped work on hello-api" in said and "port is released" in said

    again = cli(settings, "cancel", "hello-api")
    assert again.returncode == 2 and "already cancelled" in again.stderr
    unknown = cli(settings, "cancel", "no-such-project")
    assert unknown.returncode == 2 and "unknown project 'no-such-project'" in unknown.stderr


async def test_a_project_waiting_for_a_server_is_cancelled_and_never_leases(settings: Settings) -> None:
    waiting = settings.model_copy(update={"register_localhost": False})
    events = await run_turn(waiting, REQUEST, "t-wait")
    assert [ev.payload["kind"] for ev in events if ev.kind == "interrupt" and ev.payload] == ["waiting_for_resources"]
    viewer = Identity(name="token:vic", role=AccessRole.operator)

    async with OrchestratorRuntime(waiting) as rt:
        with pytest.raises(NotAllowed, match="approver"):
            [ev async for ev in rt.cancel_project("hello-api", actor=viewer, reason="no")]
        ran = [ev async for ev in rt.cancel_project("hello-api", actor=ALICE, reason="no server soon")]
        assert await rt.pending("t-wait") == []

    assert ran[-1].kind == "cancel" and ran[-1].payload == {
        "project": "hello-api",
        "status": "cancelled",
        "stopped": True,
        "thread_id": "t-wait",
    }
    assert any(ev.kind == "message" and "Stopped work on hello-api" in (ev.text or "") for ev in ran)
    await assert_cancelled(waiting, ALICE.name)
    assert not any(ev.node == "zavhoz" for ev in ran)  # the wait ended; no port was looked for


async def test_a_model_error_is_on_the_trail_and_the_stopped_run_ends_without_a_model_call(
    settings: Settings, tmp_path: Path
) -> None:
    raw = json.loads((REPO_ROOT / "core" / "scenarios" / "hello-api.json").read_text())
    raw["name"] = "no-fix"
    raw["exchanges"] = [ex for ex in raw["exchanges"] if ex["id"] != "developer-fix"]  # the second IMPL round fails
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "no-fix.json").write_text(json.dumps(raw))
    settings = settings.model_copy(update={"model": "replay/no-fix", "replay_dir": tmp_path / "rec"})

    with pytest.raises(ModelUnreachable):
        await run_turn(settings, REQUEST, "t-err")

    [failed] = [e for e in await rows(settings, Event) if e.to_status == "run_failed"]
    assert failed.reason.startswith("implementing: ModelUnreachable") and "resume t-err" in failed.reason
    calls_before = len(await rows(settings, LLMCall))
    async with OrchestratorRuntime(settings) as rt:
        ran = [ev async for ev in rt.cancel_project("hello-api", actor=ALICE, reason="the model is down")]
        state = await rt.graph.aget_state({"configurable": {"thread_id": "t-err"}})
    assert ran[-1].payload and ran[-1].payload["status"] == "cancelled"
    assert not state.next and not state.interrupts  # the thread has ended, nothing left to continue
    assert len(await rows(settings, LLMCall)) == calls_before
    await assert_cancelled(settings, ALICE.name)


async def test_a_run_going_on_stops_when_another_process_cancels_it(settings: Settings) -> None:
    seen: list[RunEvent] = []
    outcome: dict[str, Any] = {}
    async with OrchestratorRuntime(settings) as rt:
        async for ev in rt.start_turn(REQUEST, "t-live", actor=cli_identity()):
            seen.append(ev)
            if not outcome and ev.kind == "node_end" and ev.node == "run_phase" and (ev.text or "").startswith("PLAN"):
                done = cli(settings, "cancel", "hello-api", "--reason", "changed my mind", "--json")  # blocks this loop
                assert done.returncode == 0, done.stderr
                outcome = json.loads(done.stdout)

    assert outcome["stopped"] is False and outcome["thread_id"] == "t-live"  # the run here held the thread
    assert not [ev for ev in seen if ev.kind == "interrupt"]
    assert any(ev.kind == "message" and "Stopped work on hello-api" in (ev.text or "") for ev in seen)
    phases = {c.phase for c in await rows(settings, ToolCall)}
    assert "IMPL" not in phases and "REVIEW" not in phases
    await assert_cancelled(settings, cli_identity().name)


async def test_the_api_cancels_for_approvers_and_says_what_happened(settings: Settings, tmp_path: Path) -> None:
    settings = stuck(settings, tmp_path)
    await run_turn(settings, REQUEST, "t-api")
    api = start_api(settings, tmp_path / "api.log", ORCH_CONTRACT_PATH=str(settings.contract_path))
    try:
        async with api.client("operator") as op:
            refused = await op.post("/projects/hello-api/cancel", json={"reason": "x"})
        async with api.client("approver", timeout=60) as ap:
            done = await ap.post("/projects/hello-api/cancel", json={"reason": "over budget in spirit"})
            again = await ap.post("/projects/hello-api/cancel", json={})
            unknown = await ap.post("/projects/nope/cancel", json={})
            trail = (await ap.get("/events")).json()
    finally:
        stop_api(api)

    assert refused.status_code == 403 and "approver" in refused.json()["detail"]
    assert done.status_code == 200, done.text
    body = done.json()
    assert (body["status"], body["stopped"], body["thread_id"]) == ("cancelled", True, "t-api")
    assert any("Stopped work on hello-api" in line for line in body["said"])
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]
    assert unknown.status_code == 404
    who = [e["actor"] for e in trail if e["to_status"] in ("cancel_requested", "cancelled")]
    assert sorted(who) == ["token:approver", "token:approver"], trail
    await assert_cancelled(settings, "token:approver")


async def test_a_project_waiting_for_its_deploy_approval_is_cancelled_as_a_rejection(settings: Settings) -> None:
    events = await run_turn(settings, REQUEST, "t-approve")
    assert [ev.payload["kind"] for ev in events if ev.kind == "interrupt" and ev.payload] == ["deploy_approval"]

    async with OrchestratorRuntime(settings) as rt:
        ran = [ev async for ev in rt.cancel_project("hello-api", actor=ALICE, reason="we bought one instead")]
        assert await rt.pending("t-approve") == []

    assert ran[-1].payload is not None and ran[-1].payload["status"] == "cancelled"
    await assert_cancelled(settings, ALICE.name)
    [rejected] = [e for e in await rows(settings, Event) if e.to_status == "deploy_rejected"]
    assert rejected.actor == ALICE.name and "we bought one instead" in rejected.reason
