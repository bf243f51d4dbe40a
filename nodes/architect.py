"""Architect node: the design (initialized/verified/maintenance -> designing -> designed)."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime
from sqlalchemy import update
from sqlmodel import col

from graphs.context import Context
from graphs.state import EngineeringState
from models.enums import ProjectStatus
from models.tables import Project
from models.transitions import enter_project_status, transition_project
from nodes.schemas import Design
from prompts import architect as prompts


async def write_design(state: EngineeringState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Ask the Architect for a :class:`Design` of the spec (and of a person's feedback, if any).

    Re-entrant: run again after a crash (mid-node or right after it finished), it moves nothing twice.
    """
    ctx = runtime.context
    pid = state["project_id"]
    async with ctx.db.session() as s:
        await enter_project_status(
            s,
            pid,
            ProjectStatus.designing,
            finished={ProjectStatus.designed},
            reason="architect designing",
            thread_id=ctx.thread_id,
            actor=ctx.actor,
        )
    spec = state.get("spec") or {}
    feedback = state.get("feedback")
    user = prompts.USER.format(
        name=state["project_name"],
        summary=spec.get("summary", ""),
        requirements="\n".join(f"- {r}" for r in spec.get("requirements", [])),
        feedback=prompts.FEEDBACK.format(feedback=feedback) if feedback else "",
    )
    messages = [
        {"role": "system", "content": prompts.SYSTEM.format(health_path="/health")},
        {"role": "user", "content": user},
    ]
    design = await ctx.llm.structured("architect", messages, Design, thread_id=ctx.thread_id)
    async with ctx.db.session() as s:
        await transition_project(
            s,
            pid,
            ProjectStatus.designed,
            reason=f"design: {design.summary[:120]}",
            thread_id=ctx.thread_id,
            actor=ctx.actor,
        )
        # The names the service reads (the deploy checks they are stored); in the same transaction as the move.
        await s.exec(update(Project).where(col(Project.id) == pid).values(required_secrets=design.secrets))  # type: ignore[call-overload]
    return {
        "design": design.model_dump(),
        "iteration": 0,
        "rounds": 0,
        "failure": None,
        "guidance": None,
        "engineering_status": "working",
    }
