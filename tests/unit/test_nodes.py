"""Node bodies called directly, on a scripted model, a real SQLite file and a local forge of real git repos.

Each node is also run a second time on the same input, as LangGraph does after a kill -9 at the node's end
(effects committed, the step's checkpoint not): the re-run must move no status twice and duplicate nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.runtime import Runtime
from sqlmodel import select

from core.db import Database
from core.llm import LLMReply
from core.settings import Settings
from graphs.context import Context
from graphs.state import ServerInfo
from infra.ansible import PlaybookResult
from infra.forge.local import LocalForge
from models.enums import DeploymentStatus, ProjectStatus
from models.tables import Deployment, Event, Incident, PortLease, Project, Server
from models.transitions import IllegalTransition
from nodes import devops
from nodes.engineering import run_phase
from nodes.product_owner import provision_repository, run_po_tools
from nodes.report import report_to_user
from nodes.zavhoz import find_server, lease_port
from services.leases import ensure_default_server
from services.verification import Attestation

THREAD = "t-unit"
DESIGN = {
    "summary": "a tiny health service",
    "acceptance_criteria": [{"id": "AC1", "text": "health() returns 'ok'"}],
    "files": [{"path": "app.py", "purpose": "the service"}, {"path": "tests/test_app.py", "purpose": "its tests"}],
    "entrypoint": "app.py",
    "health_path": "/health",
}


class ScriptedLLM:
    """Stands in for core.llm.LLM: each role answers from its script, in order; every request is recorded."""

    def __init__(self, **scripts: list[Any]) -> None:
        self.scripts = {role: list(answers) for role, answers in scripts.items()}
        self.asked: list[tuple[str, list[dict[str, Any]]]] = []
        self.unused: list[str] = []

    def _next(self, role: str, messages: list[dict[str, Any]]) -> Any:
        self.asked.append((role, messages))
        if not self.scripts.get(role):
            raise AssertionError(f"the {role} model was asked more often than scripted")
        return self.scripts[role].pop(0)

    async def chat(
        self,
        role: str,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        thread_id: str | None = None,
        project_id: int | None = None,
    ) -> LLMReply:
        answer = self._next(role, [dict(m) for m in messages])
        return answer if isinstance(answer, LLMReply) else LLMReply(content=str(answer))

    async def mark_unused(self, reply: LLMReply, why: str) -> None:
        self.unused.append(why)

    def roles(self) -> list[str]:
        return [role for role, _ in self.asked]


def runtime(settings: Settings, db: Database, llm: ScriptedLLM, thread_id: str = THREAD) -> Runtime[Context]:
    forge = LocalForge(settings.data_dir / "forge")
    return Runtime(
        context=Context(settings=settings, db=db, llm=llm, forge=forge, thread_id=thread_id, actor="cli:test")
    )  # type: ignore[arg-type]


async def make_project(db: Database, status: ProjectStatus, thread_id: str = THREAD, **fields: Any) -> Project:
    """A project in ``status``, with the Event that moved it there (by ``thread_id``)."""
    async with db.session() as s:
        project = Project(name="hello-api", status=status, thread_id=thread_id, spec={"summary": "hi"}, **fields)
        s.add(project)
        await s.flush()
        assert project.id is not None
        s.add(
            Event(
                subject_type="project",
                subject_id=project.id,
                to_status=status.value,
                reason="setup",
                thread_id=thread_id,
            )
        )
    return project


async def status_and_trail(db: Database, pid: int) -> tuple[str, list[tuple[str | None, str]]]:
    async with db.session() as s:
        project = await s.get(Project, pid)
        events = (await s.exec(select(Event).where(Event.subject_type == "project", Event.subject_id == pid))).all()
    assert project is not None
    return project.status, [(e.from_status, e.to_status) for e in events if e.reason != "setup"]


async def with_repo(settings: Settings, db: Database, status: ProjectStatus) -> Project:
    repo = LocalForge(settings.data_dir / "forge").create_repo("hello-api", "hi")
    return await make_project(
        db, status, github_repo_id=repo.id, repo_full_name=repo.full_name, clone_url=repo.clone_url
    )


def eng_state(project: Project, **extra: Any) -> dict[str, Any]:
    return {"project_id": project.id, "project_name": project.name, "spec": {"summary": "hi"}, **extra}


# --- Engineering phases (run_phase) -------------------------------------------------------------------------------


def finish(artifact: dict[str, Any], *calls: tuple[str, dict[str, Any]]) -> LLMReply:
    """A model answer that makes ``calls`` and then hands in ``artifact``."""
    made = [{"id": f"c{i}", "name": name, "args": args} for i, (name, args) in enumerate(calls)]
    return LLMReply(content="", tool_calls=[*made, {"id": "cf", "name": "finish", "args": artifact}])


async def test_plan_phase_plans_and_a_rerun_moves_nothing_twice(settings: Settings, db: Database) -> None:
    project = await with_repo(settings, db, ProjectStatus.initialized)
    llm = ScriptedLLM(architect=[finish(DESIGN), finish(DESIGN)])
    rt = runtime(settings, db, llm)

    out = await run_phase(eng_state(project, feedback="make it fast"), rt)  # type: ignore[arg-type]
    assert out["phase"] == "TDD" and out["design"]["entrypoint"] == "app.py" and out["gate_feedback"] is None
    assert out["phase_rounds"] == {"PLAN": 1} and out["timeline"][-1]["outcome"] == "passed"
    assert "make it fast" in llm.asked[0][1][-1]["content"]
    system = llm.asked[0][1][0]["content"]
    assert "look like this example" in system and '"entrypoint": "app.py"' in system  # the contract's example
    again = await run_phase(eng_state(project, feedback="make it fast"), rt)  # type: ignore[arg-type]
    assert again["phase"] == out["phase"] and again["design"] == out["design"]
    assert project.id is not None
    status, trail = await status_and_trail(db, project.id)
    assert status == "designed"
    moves = [t for t in trail if t[0] is not None]
    assert moves == [("initialized", "designing"), ("designing", "designed")]


async def test_plan_phase_refuses_a_project_another_thread_designed(settings: Settings, db: Database) -> None:
    project = await make_project(db, ProjectStatus.designed, thread_id="t-other")
    llm = ScriptedLLM(architect=[finish(DESIGN)])
    with pytest.raises(IllegalTransition, match="'designed' to 'designing'"):
        await run_phase(eng_state(project), runtime(settings, db, llm))  # type: ignore[arg-type]
    assert llm.asked == []  # refused before asking the model


async def test_an_invalid_plan_is_refused_at_finish_and_the_model_reads_why(settings: Settings, db: Database) -> None:
    project = await with_repo(settings, db, ProjectStatus.initialized)
    bad = {**DESIGN, "acceptance_criteria": []}
    llm = ScriptedLLM(architect=[finish(bad), finish(DESIGN)])
    out = await run_phase(eng_state(project), runtime(settings, db, llm))  # type: ignore[arg-type]
    assert out["phase"] == "TDD"
    second = llm.asked[1][1]
    assert second[-1]["role"] == "tool" and "acceptance_criteria" in second[-1]["content"]
    assert second[-1]["content"].startswith("refused: the PLAN artifact is invalid")


async def test_a_plan_written_as_text_is_handed_in_and_an_invalid_one_is_quoted_back(
    settings: Settings, db: Database
) -> None:
    project = await with_repo(settings, db, ProjectStatus.initialized)
    bad = {**DESIGN, "acceptance_criteria": [{"id": "X1", "text": "t"}]}
    llm = ScriptedLLM(
        architect=[
            LLMReply(content="Here is the design:\n```json\n" + json.dumps(bad) + "\n```"),
            LLMReply(content="Sorry, corrected:\n" + json.dumps(DESIGN)),
        ]
    )
    out = await run_phase(eng_state(project), runtime(settings, db, llm))  # type: ignore[arg-type]
    assert out["phase"] == "TDD" and out["design"]["summary"] == DESIGN["summary"]
    reask = llm.asked[1][1][-1]
    assert reask["role"] == "user" and "is not a valid artifact" in reask["content"]
    assert "'X1' does not match" in reask["content"] and "Call `finish` with the corrected object" in reask["content"]
    assert llm.unused == ["answered without a tool call"]  # only the invalid one; the corrected one was used


# --- Zavhoz ------------------------------------------------------------------------------------------------------


async def test_zavhoz_leases_one_port_per_project_even_when_rerun(settings: Settings, db: Database) -> None:
    await ensure_default_server(db, settings)
    project = await make_project(db, ProjectStatus.initialized)
    rt = runtime(settings, db, ScriptedLLM())
    state: dict[str, Any] = {"project_id": project.id, "project_name": project.name}

    state |= await find_server(state, rt)  # type: ignore[arg-type]
    first = await lease_port(state, rt)  # type: ignore[arg-type]
    again = await lease_port(state, rt)  # type: ignore[arg-type]
    assert first == again and first["zavhoz_status"] == "done"
    assert first["server_info"]["port"] == settings.port_range_start
    assert await find_server({"project_id": project.id, "project_name": project.name}, rt) == {  # type: ignore[arg-type]
        "server_id": state["server_id"]
    }
    async with db.session() as s:
        leases = (await s.exec(select(PortLease))).all()
        row = await s.get(Project, project.id)
    assert [(lease.project_id, lease.port) for lease in leases] == [(project.id, settings.port_range_start)]
    assert row is not None and row.port == settings.port_range_start


async def test_zavhoz_without_a_ready_server_waits_for_resources(settings: Settings, db: Database) -> None:
    project = await make_project(db, ProjectStatus.initialized)
    out = await find_server(
        {"project_id": project.id, "project_name": project.name}, runtime(settings, db, ScriptedLLM())
    )  # type: ignore[arg-type]
    assert out == {"server_id": None, "server_info": None, "zavhoz_status": "waiting_for_resources"}


# --- Product Owner -----------------------------------------------------------------------------------------------


def create_call(name: str = "hello-api") -> dict[str, Any]:
    args = {"name": name, "summary": "a tiny health service", "requirements": ["GET /health"]}
    return {
        "messages": [AIMessage(content="", tool_calls=[{"id": "c1", "name": "create_project_intent", "args": args}])]
    }


async def test_run_po_tools_rerun_carries_on_with_the_draft_it_created(settings: Settings, db: Database) -> None:
    rt = runtime(settings, db, ScriptedLLM())
    out = await run_po_tools(create_call(), rt)  # type: ignore[arg-type]
    again = await run_po_tools(create_call(), rt)  # type: ignore[arg-type]
    for update in (out, again):
        [msg] = update["messages"]
        assert isinstance(msg, ToolMessage) and '"created": "hello-api"' in str(msg.content)
        assert update["new_project"] is True
    assert out["project_id"] == again["project_id"] and out["spec"] == again["spec"]
    async with db.session() as s:
        projects = (await s.exec(select(Project))).all()
        events = (await s.exec(select(Event))).all()
    assert [(p.name, p.status, p.thread_id) for p in projects] == [("hello-api", "draft", THREAD)]
    assert [(e.from_status, e.to_status) for e in events] == [(None, "draft")]


@pytest.mark.parametrize(
    ("owner", "status"),
    [("t-other", ProjectStatus.draft), (THREAD, ProjectStatus.active)],
    ids=["other-thread", "same-thread-past-draft"],
)
async def test_run_po_tools_still_refuses_a_project_that_exists(
    settings: Settings, db: Database, owner: str, status: ProjectStatus
) -> None:
    await make_project(db, status, thread_id=owner)
    out = await run_po_tools(create_call(), runtime(settings, db, ScriptedLLM()))  # type: ignore[arg-type]
    [msg] = out["messages"]
    assert "already exists" in str(msg.content) and "new_project" not in out


async def test_provision_repository_rerun_reuses_the_repository(settings: Settings, db: Database) -> None:
    project = await make_project(db, ProjectStatus.estimated)
    assert project.id is not None
    rt = runtime(settings, db, ScriptedLLM())
    state = {"project_id": project.id, "project_name": "hello-api", "spec": {"summary": "hi"}}

    out = await provision_repository(state, rt)  # type: ignore[arg-type]
    again = await provision_repository(state, rt)  # type: ignore[arg-type]
    assert out == again == {"zavhoz_status": "working", "engineering_status": "working"}
    forge = settings.data_dir / "forge"
    assert [p.name for p in forge.glob("*.git")] == ["hello-api.git"]
    async with db.session() as s:
        row = await s.get(Project, project.id)
    assert row is not None and row.clone_url == str(forge / "hello-api.git")
    assert row.github_repo_id == -1001  # the local forge's ids are negative
    assert await status_and_trail(db, project.id) == (
        "initialized",
        [("estimated", "provisioning"), ("provisioning", "initialized")],
    )


async def test_provision_repository_after_a_kill_mid_node_finds_the_repository(
    settings: Settings, db: Database
) -> None:
    project = await make_project(db, ProjectStatus.provisioning)  # it died after creating the repo, before recording
    assert project.id is not None
    made = LocalForge(settings.data_dir / "forge").create_repo("hello-api", "hi")
    state = {"project_id": project.id, "project_name": "hello-api", "spec": {"summary": "hi"}}
    await provision_repository(state, runtime(settings, db, ScriptedLLM()))  # type: ignore[arg-type]
    async with db.session() as s:
        row = await s.get(Project, project.id)
    assert row is not None and row.github_repo_id == made.id
    assert await status_and_trail(db, project.id) == ("initialized", [("provisioning", "initialized")])


# --- DevOps ------------------------------------------------------------------------------------------------------


def fake_playbook(ok: bool, calls: list[str]) -> Callable[..., Any]:
    async def run_deploy(settings: Settings, *, commit: str, **_: Any) -> PlaybookResult:
        calls.append(commit)
        return PlaybookResult(
            status="successful" if ok else "failed", rc=0 if ok else 2, summary="ok" if ok else "boom", stats={}
        )

    return run_deploy


async def deploy_state(
    settings: Settings, db: Database, monkeypatch: pytest.MonkeyPatch
) -> tuple[Project, dict[str, Any]]:
    """A verified project with a lease on localhost; its signed verification is taken as valid (the deploy node's
    bookkeeping is under test here; the check itself is tested in tests/integration/test_contract.py)."""

    async def accept(settings: Settings, project: Project, commit: str, token: str | None, **_: Any) -> Attestation:
        return Attestation(project.name, project.id or 0, commit, "e" * 40, "h", {}, "1", "d", "strict")

    monkeypatch.setattr(devops, "check_verification", accept)
    await ensure_default_server(db, settings)
    project = await make_project(db, ProjectStatus.verified)
    async with db.session() as s:
        server = (await s.exec(select(Server))).one()
    assert server.id is not None and project.id is not None
    s_info = ServerInfo(
        server_id=server.id,
        name=server.name,
        address=server.address,
        connection="local",
        ssh_port=22,
        ssh_user="root",
        port=settings.port_range_start,
    )
    async with db.session() as s:
        s.add(PortLease(server_id=server.id, port=settings.port_range_start, project_id=project.id))
    eng = {"status": "verified", "commit": "c" * 40, "entrypoint": "app.py", "health_path": "/health", "tests": {}}
    return project, {"project_id": project.id, "project_name": project.name, "engineering": eng, "server_info": s_info}


@pytest.mark.parametrize("ok", [True, False], ids=["succeeded", "failed"])
async def test_deploy_rerun_reports_the_recorded_outcome_and_runs_nothing(
    settings: Settings, db: Database, monkeypatch: pytest.MonkeyPatch, ok: bool
) -> None:
    project, state = await deploy_state(settings, db, monkeypatch)
    assert project.id is not None
    calls: list[str] = []
    monkeypatch.setattr(devops, "run_deploy", fake_playbook(ok, calls))
    rt = runtime(settings, db, ScriptedLLM())

    out = await devops.deploy_project(state, rt)  # type: ignore[arg-type]
    again = await devops.deploy_project(state, rt)  # type: ignore[arg-type]
    assert again == out and calls == ["c" * 40]
    assert out["deployment"]["status"] == ("succeeded" if ok else "failed")
    assert out["deployment"]["url"] == f"http://127.0.0.1:{settings.port_range_start}/health"
    async with db.session() as s:
        [row] = (await s.exec(select(Deployment))).all()
    assert row.status == (DeploymentStatus.succeeded if ok else DeploymentStatus.failed)
    end = "active" if ok else "verified"
    assert await status_and_trail(db, project.id) == (end, [("verified", "deploying"), ("deploying", end)])


async def test_a_rolled_back_deploy_leaves_the_project_active_with_an_incident_and_says_so(
    settings: Settings, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, state = await deploy_state(settings, db, monkeypatch)
    assert project.id is not None
    previous = "a" * 40

    async def run_deploy(settings: Settings, **_: Any) -> PlaybookResult:
        said = f"hello-api did not become healthy (...)\nrolled back to {previous}: it answers on port 8100 again"
        return PlaybookResult(status="failed", rc=2, summary=said, stats={})

    monkeypatch.setattr(devops, "run_deploy", run_deploy)
    rt = runtime(settings, db, ScriptedLLM())
    out = await devops.deploy_project(state, rt)  # type: ignore[arg-type]
    again = await devops.deploy_project(state, rt)  # type: ignore[arg-type]  # a re-run reports, runs nothing

    assert out["deployment"]["status"] == "rolled_back" and again == out
    assert await status_and_trail(db, project.id) == ("active", [("verified", "deploying"), ("deploying", "active")])
    async with db.session() as s:
        [incident] = (await s.exec(select(Incident))).all()
    assert (incident.kind, incident.subject_id, incident.resolved_at) == ("deploy_rolled_back", project.id, None)
    assert f"rolled back to {previous[:10]}" in incident.message
    text = report_to_user({**state, **out})["messages"][0].content  # type: ignore[typeddict-item]
    assert "rolled back" in text and "answers again" in text and "incident" in text


async def test_deploy_of_a_commit_another_thread_deployed_runs_again(
    settings: Settings, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, state = await deploy_state(settings, db, monkeypatch)
    assert project.id is not None
    calls: list[str] = []
    monkeypatch.setattr(devops, "run_deploy", fake_playbook(False, calls))
    await devops.deploy_project(state, runtime(settings, db, ScriptedLLM(), thread_id="t-first"))  # type: ignore[arg-type]
    monkeypatch.setattr(devops, "run_deploy", fake_playbook(True, calls))
    out = await devops.deploy_project(state, runtime(settings, db, ScriptedLLM()))  # type: ignore[arg-type]
    assert out["deployment"]["status"] == "succeeded" and len(calls) == 2
    status, trail = await status_and_trail(db, project.id)
    assert status == "active" and trail[-2:] == [("verified", "deploying"), ("deploying", "active")]
