"""PO nodes: the conversational agent, its tool step, and the new-project steps before the teams start."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage, convert_to_openai_messages
from langgraph.runtime import Runtime
from pydantic import ValidationError
from sqlmodel import select

from core.llm import INVALID_ARGUMENTS, LLMReply
from graphs.context import Context
from graphs.state import OrchestratorState
from infra.forge.base import ensure_repo
from models.enums import ProjectStatus
from models.tables import Project
from models.transitions import enter_project_status, transition_project
from nodes import po_tools
from prompts import po as prompts
from services.budgets import BudgetLimits
from services.incidents import take_unsurfaced
from services.recovery import recover


async def surface_incidents(state: OrchestratorState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Before the PO answers, tell the person what went wrong (or recovered) since they last spoke.

    The first node of every turn, so the turn's count of PO tool rounds starts at zero here.
    """
    async with runtime.context.db.session() as s:
        incidents = await take_unsurfaced(s)
    if not incidents:
        return {"po_tool_rounds": 0}
    lines = [
        f"- #{i.id} [{i.severity}] {i.message} (since {i.opened_at:%Y-%m-%d %H:%M} UTC"
        + (", resolved since)" if i.resolved_at else ")")
        for i in incidents
    ]
    text = "Since we last spoke:\n" + "\n".join(lines) + "\nAsk me to fix one by its number."
    return {"messages": [AIMessage(content=text)], "po_tool_rounds": 0}


async def call_po(state: OrchestratorState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Ask the PO model for its next move given the conversation; it may call tools.

    A turn has at most ``po_max_tool_rounds`` tool rounds (a model that calls a tool that does not exist, or the same
    one, over and over): after that the turn ends with words saying so, without another model call.
    """
    ctx = runtime.context
    rounds = state.get("po_tool_rounds", 0)
    if rounds >= ctx.settings.po_max_tool_rounds:
        text = (
            f"I stopped after {rounds} tool calls without an answer for you (the last one: "
            f"{_last_tool_result(state)}). Nothing else was started; please say again what you need."
        )
        return {"messages": [AIMessage(content=text)], "new_project": False, "change": None, "deploy_again": False}
    system = SystemMessage(prompts.SYSTEM.format(today=datetime.now(UTC).date().isoformat()))
    messages: list[dict[str, Any]] = convert_to_openai_messages([system, *state.get("messages", [])])  # type: ignore[assignment]

    async def ask(convo: list[dict[str, Any]]) -> LLMReply:
        return await ctx.llm.chat(
            "po",
            convo,
            tools=po_tools.openai_tools(),
            thread_id=ctx.thread_id,
            project_id=state.get("project_id"),  # the PO's calls count against the project in flight, if any
        )

    reply = await ask(messages)
    claim = unbacked_claim(reply, state)
    if claim:  # said it acted, called nothing: asked once more, then the person is told nothing was started
        await ctx.llm.mark_unused(reply, f"claimed {claim!r} without calling its tool")
        reask = {"role": "user", "content": prompts.UNBACKED_CLAIM.format(claim=claim)}
        reply = await ask([*messages, {"role": "assistant", "content": reply.content}, reask])
        if unbacked_claim(reply, state):
            reply = LLMReply(content=prompts.NOTHING_STARTED.format(said=reply.content.strip()))
    calls = [{"id": c["id"], "name": c["name"], "args": c["args"]} for c in reply.tool_calls]
    return {
        "messages": [AIMessage(content=reply.content, tool_calls=calls)],
        "new_project": False,
        "change": None,
        "deploy_again": False,
    }


async def run_po_tools(state: OrchestratorState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Run the tool calls of the PO's last message; a bad call becomes an error the model reads, not a crash.

    Re-entrant: run again after a crash, ``create_project_intent`` finds the draft project this thread created and
    carries on with it, instead of failing on "already exists".
    """
    ctx = runtime.context
    last = state["messages"][-1]
    out: list[ToolMessage] = []
    update: dict[str, Any] = {}
    for call in getattr(last, "tool_calls", []):
        try:
            result = await _run_tool(ctx, call["name"], call["args"], update, state)
        except (ValidationError, ValueError) as exc:
            result = json.dumps({"error": str(exc)})
        out.append(ToolMessage(content=result, tool_call_id=call["id"], name=call["name"]))
    return {"messages": out, "po_tool_rounds": state.get("po_tool_rounds", 0) + 1, **update}


_CLAIMS = re.compile(
    r"\b(I(?:'ve| have)? (?:just |now |already )?(?:created|started|set up|launched|kicked off|updated|deployed|fixed)"
    r"|the teams? (?:are|is) (?:now )?(?:working|building|on it)"
    r"|(?:has|have) been (?:created|started|deployed|set up|updated))\b",
    re.IGNORECASE,
)
ACTING_TOOLS = {"create_project_intent", "update_project_intent", "deploy_project_intent", "fix_incident"}
"""The tools that make something happen; a claim of action needs one of them called in the turn."""


def unbacked_claim(reply: LLMReply, state: OrchestratorState) -> str | None:
    """The words of ``reply`` that claim an action no tool of this turn performed, or None.

    A reply with tool calls claims nothing yet (the calls run next); otherwise one of :data:`ACTING_TOOLS` must have
    run since the person's last message for "I've created ..." or "the teams are working" to be true.
    """
    if reply.tool_calls:
        return None
    found = _CLAIMS.search(reply.content or "")
    if found is None:
        return None
    for message in reversed(state.get("messages", [])):
        if isinstance(message, HumanMessage):
            break
        if isinstance(message, ToolMessage) and message.name in ACTING_TOOLS and '"error"' not in str(message.content):
            return None
    return found.group(0)


def _last_tool_result(state: OrchestratorState) -> str:
    """The last tool result of the conversation, shortened, for the person."""
    last = next((m for m in reversed(state.get("messages", [])) if isinstance(m, ToolMessage)), None)
    return f"{last.name}: {str(last.content)[:200]}" if last is not None else "none"


async def _run_tool(
    ctx: Context, name: str, args: dict[str, Any], update: dict[str, Any], state: OrchestratorState
) -> str:
    if name not in po_tools.TOOLS:
        raise ValueError(f"unknown tool {name!r}; use one of {sorted(po_tools.TOOLS)}")
    if INVALID_ARGUMENTS in args:
        raise ValueError(f"the arguments of {name} are not valid JSON: {str(args[INVALID_ARGUMENTS])[:200]!r}")
    parsed = po_tools.TOOLS[name].model_validate(args)
    starts = (po_tools.CreateProjectIntent, po_tools.UpdateProjectIntent)
    if isinstance(parsed, starts) and update.get("project_name") not in (None, getattr(parsed, "name", None)):
        raise ValueError(
            f"{update['project_name']} was started by this answer already: one project per turn. Tell the person "
            f"{parsed.name} comes next, once they ask again"
        )
    if isinstance(parsed, po_tools.CreateProjectIntent):
        project = await _draft_of_this_thread(ctx, parsed.name) or await po_tools.create_project(
            ctx.db, parsed, ctx.thread_id, actor=ctx.actor, budget=BudgetLimits.from_settings(ctx.settings)
        )
        update.update(
            project_id=project.id,
            project_name=project.name,
            spec=project.spec,
            new_project=True,
            server_info=None,
            engineering=None,
            approval=None,
            deployment=None,
        )
        return json.dumps({"created": project.name, "status": project.status})
    if isinstance(parsed, po_tools.UpdateProjectIntent):
        project = await po_tools.start_update(ctx.db, parsed, ctx.thread_id, actor=ctx.actor)
        spec = project.spec or {"name": project.name, "summary": project.description or project.name}
        update.update(
            project_id=project.id,
            project_name=project.name,
            spec=spec,
            change=parsed.change,
            server_info=None,
            engineering=None,
            approval=None,
            deployment=None,
        )
        return json.dumps({"updating": project.name, "status": project.status, "change": parsed.change})
    if isinstance(parsed, po_tools.DeployProjectIntent):
        await _verified_here(ctx, parsed.name, state)
        update.update(deploy_again=True, approval=None, deployment=None)
        return json.dumps({"deploying": parsed.name, "asks": "the person's approval first"})
    if isinstance(parsed, po_tools.GetProjectStatus):
        return await po_tools.get_project_status(ctx.db, parsed.name)
    if isinstance(parsed, po_tools.FixIncident):
        outcome = await recover(ctx.settings, ctx.db, ctx.forge, parsed.incident_id, ctx.thread_id, actor=ctx.actor)
        return json.dumps(outcome)
    return await po_tools.list_projects(ctx.db)


async def _verified_here(ctx: Context, name: str, state: OrchestratorState) -> None:
    """Check that ``name`` is verified at the commit this thread built, with the server it leased.

    Raises:
        ValueError: another status, or the verified commit is not this conversation's (say what to do instead).
    """
    async with ctx.db.session() as s:
        project = (await s.exec(select(Project).where(Project.name == name))).first()
    if project is None:
        raise ValueError(f"no project named {name!r}")
    if project.status != ProjectStatus.verified:
        raise ValueError(f"{name} is {project.status.value}, not verified: only a verified, undeployed build deploys")
    eng = state.get("engineering")
    if state.get("project_id") != project.id or not eng or eng["status"] != "verified" or not state.get("server_info"):
        raise ValueError(
            f"this conversation holds no verified build of {name}: ask for an update, which rebuilds, tests and "
            "asks before deploying"
        )


async def _draft_of_this_thread(ctx: Context, name: str) -> Project | None:
    """The project ``name`` if this thread created it and its pipeline has not started (a re-run of the tool step)."""
    async with ctx.db.session() as s:
        project = (await s.exec(select(Project).where(Project.name == name))).first()
    if project is None or project.thread_id != ctx.thread_id or project.status != ProjectStatus.draft:
        return None
    return project


async def estimate_project(state: OrchestratorState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Record the spec: draft -> estimated."""
    ctx = runtime.context
    async with ctx.db.session() as s:
        await transition_project(
            s,
            _pid(state),
            ProjectStatus.estimated,
            reason="spec recorded from the conversation",
            thread_id=ctx.thread_id,
            actor=ctx.actor,
        )
    return {"new_project": False}


async def provision_repository(state: OrchestratorState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Create the project's repository (idempotent): estimated -> provisioning -> initialized.

    Re-entrant: run again after a crash, it finds the repository on the forge by name (it died before recording
    it) or, once ``initialized`` by this thread, reuses the repository recorded on the project without asking the
    forge; no status moves twice and no second repository is made.
    """
    ctx = runtime.context
    pid = _pid(state)
    async with ctx.db.session() as s:
        again = await enter_project_status(
            s,
            pid,
            ProjectStatus.provisioning,
            finished={ProjectStatus.initialized},
            reason=f"creating repository on {ctx.forge.kind}",
            thread_id=ctx.thread_id,
            actor=ctx.actor,
        )
        project = await s.get(Project, pid)
    assert project is not None
    if again is not None and project.github_repo_id is not None and project.clone_url:
        return {"zavhoz_status": "working", "engineering_status": "working"}
    name = state["project_name"] or ""
    summary = (state.get("spec") or {}).get("summary", "")
    repo = await asyncio.to_thread(ensure_repo, ctx.forge, name, summary)
    async with ctx.db.session() as s:
        project = await s.get(Project, pid)
        assert project is not None
        project.github_repo_id, project.repo_full_name = repo.id, repo.full_name
        project.repo_url, project.clone_url, project.default_branch = repo.html_url, repo.clone_url, repo.default_branch
        s.add(project)
        await transition_project(
            s,
            pid,
            ProjectStatus.initialized,
            reason=f"repository {repo.full_name} exists",
            thread_id=ctx.thread_id,
            actor=ctx.actor,
        )
    return {"zavhoz_status": "working", "engineering_status": "working"}


def _pid(state: OrchestratorState) -> int:
    pid = state.get("project_id")
    if pid is None:
        raise RuntimeError("no project in this thread's state")
    return pid
