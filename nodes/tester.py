"""Tester node: run the tests for real, in the sandbox (implemented -> verifying -> verified, or back to Developer)."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from graphs.context import Context
from graphs.state import EngineeringResult, EngineeringState
from infra.testrun import run_tests as run_test_command
from models.enums import ProjectStatus
from models.transitions import enter_project_status, transition_project
from nodes.schemas import Diagnosis
from prompts import developer as dev_prompts
from prompts import tester as prompts


async def run_tests(state: EngineeringState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Run the project's test command in its working copy; on failure, ask the Tester model for a diagnosis.

    Re-entrant: run again after a crash (mid-node or right after it finished), it runs the tests again but moves
    no status twice.
    """
    ctx = runtime.context
    pid, name, commit = state["project_id"], state["project_name"], state["commit"]
    async with ctx.db.session() as s:
        await enter_project_status(
            s,
            pid,
            ProjectStatus.verifying,
            finished={ProjectStatus.verified},
            reason=f"testing {commit[:10]}",
            thread_id=ctx.thread_id,
            actor=ctx.actor,
        )
    root = ctx.settings.data_dir.resolve() / "workspaces" / name
    run = await run_test_command(root, ctx.settings, state["design"].get("test_command"))
    tests = {
        "passed": run.passed,
        "rc": run.rc,
        "command": run.command,
        "sandboxed": run.sandboxed,
        "reason": run.reason,
        "rounds": state.get("rounds", 1),
        "duration_s": round(run.duration_s, 2),
        "output_tail": run.output[-1500:],
    }
    if run.passed:
        async with ctx.db.session() as s:
            await transition_project(
                s,
                pid,
                ProjectStatus.verified,
                reason=f"tests pass at {commit[:10]}",
                thread_id=ctx.thread_id,
                actor=ctx.actor,
            )
        design = state["design"]
        result = EngineeringResult(
            status="verified",
            commit=commit,
            entrypoint=design["entrypoint"],
            health_path=design["health_path"],
            tests=tests,
        )
        return {"tests": tests, "failure": None, "engineering": result, "engineering_status": "verified"}
    messages = [
        {"role": "system", "content": prompts.SYSTEM},
        {
            "role": "user",
            "content": prompts.USER.format(
                name=name, commit=commit[:10], command=run.command, rc=run.rc, output=run.output[-3000:]
            ),
        },
    ]
    diagnosis = await ctx.llm.structured("tester", messages, Diagnosis, thread_id=ctx.thread_id)
    failure = dev_prompts.FAILURE.format(commit=commit[:10], diagnosis=diagnosis.diagnosis, output=run.output[-3000:])
    return {"tests": tests, "failure": failure, "guidance": None}
