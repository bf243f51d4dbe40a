"""Developer node: write files into the project's working copy, commit and push (-> implementing -> implemented)."""

from __future__ import annotations

import asyncio
from typing import Any

from langgraph.runtime import Runtime

from graphs.context import Context
from graphs.state import EngineeringState
from infra import workspace
from infra.venvs import REQUIREMENTS
from models.enums import ProjectStatus
from models.tables import Project
from models.transitions import enter_project_status, transition_project
from nodes.schemas import CodeChange
from prompts import developer as prompts


async def write_code(state: EngineeringState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Ask the Developer for complete files, write them (inside the working copy only), commit and push.

    Re-entrant: run again after a crash (mid-node or right after it finished), it moves no status twice, and an
    unchanged tree commits nothing new (the same sha is pushed again).

    Raises:
        PathOutsideWorkspace: a file path leaves the working copy; nothing is written or committed.
    """
    ctx = runtime.context
    pid = state["project_id"]
    async with ctx.db.session() as s:
        await enter_project_status(
            s,
            pid,
            ProjectStatus.implementing,
            finished={ProjectStatus.implemented},
            reason=_why(state),
            thread_id=ctx.thread_id,
            actor=ctx.actor,
        )
        project = await s.get(Project, pid)
    assert project is not None and project.clone_url
    root = ctx.settings.data_dir.resolve() / "workspaces" / project.name
    git_auth = ctx.forge.git_auth()
    await asyncio.to_thread(workspace.prepare, root, project.clone_url, git_auth, project.default_branch)
    change = await ctx.llm.structured(
        "developer", _messages(state, workspace.listing(root)), CodeChange, thread_id=ctx.thread_id
    )
    files = [(f.path, f.content) for f in change.files]
    deps = state["design"].get("dependencies") or []
    if deps and not any(path == REQUIREMENTS for path, _ in files) and not (root / REQUIREMENTS).is_file():
        files.append((REQUIREMENTS, "\n".join(deps) + "\n"))  # the design's dependencies live in the repository
    await asyncio.to_thread(workspace.write_files, root, files)
    sha = await asyncio.to_thread(workspace.commit_and_push, root, change.message, git_auth, project.default_branch)
    async with ctx.db.session() as s:
        await transition_project(
            s,
            pid,
            ProjectStatus.implemented,
            reason=f"commit {sha[:10]}: {change.message[:80]}",
            thread_id=ctx.thread_id,
            actor=ctx.actor,
        )
    return {"commit": sha, "iteration": state.get("iteration", 0) + 1, "rounds": state.get("rounds", 0) + 1}


def _why(state: EngineeringState) -> str:
    if state.get("guidance"):
        return "developer applying a person's guidance"
    if state.get("failure"):
        return "developer fixing failing tests"
    return "developer implementing the design"


def _messages(state: EngineeringState, tree: list[str]) -> list[dict[str, str]]:
    design = state["design"]
    failure = state.get("failure")
    guidance = state.get("guidance")
    user = prompts.USER.format(
        name=state["project_name"],
        summary=design["summary"],
        entrypoint=design["entrypoint"],
        health_path=design["health_path"],
        files="\n".join(f"- {f['path']}: {f['purpose']}" for f in design["files"]),
        tree="\n".join(f"- {p}" for p in tree) or "(empty)",
        failure=failure or "",
        guidance=prompts.GUIDANCE.format(guidance=guidance) if guidance else "",
    )
    return [{"role": "system", "content": prompts.SYSTEM}, {"role": "user", "content": user}]
