"""Interrupt nodes: each asks a person one typed question and does nothing else (they re-run on resume)."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from graphs.context import Context
from graphs.state import EngineeringState, OrchestratorState
from models.interrupts import (
    DeployApprovalRequest,
    DeployDecision,
    GuidanceAnswer,
    GuidanceRequest,
    ResourcesAnswer,
    ResourcesRequest,
)
from services.secrets import missing_secrets, secret_set_commands


async def request_deploy_approval(state: OrchestratorState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Ask whether to deploy the verified commit to the leased server:port; returns ``approval``.

    Secrets the design requires and nobody stored yet are listed (names, and the command that sets each): the
    person can set them while the question waits, then approve. Reading them is the only thing done before the
    interrupt (a read: harmless when the node re-runs on resume).
    """
    eng, server = state["engineering"], state["server_info"]
    assert eng is not None and server is not None and state["project_id"] is not None
    host = "127.0.0.1" if server["connection"] == "local" else server["address"]
    name = state["project_name"] or ""
    missing = await missing_secrets(runtime.context.db, state["project_id"])
    question = f"Deploy {name} commit {eng['commit'][:10]} to {server['name']}:{server['port']}?"
    if missing:
        question += (
            f" First set the missing secret(s) {', '.join(missing)}: {secret_set_commands(name, missing)}"
            " (the deploy refuses without them)."
        )
    request = DeployApprovalRequest(
        question=question,
        project=state["project_name"] or "",
        commit=eng["commit"],
        server=server["name"],
        port=server["port"],
        url=f"http://{host}:{server['port']}{eng['health_path']}",
        tests=eng["tests"],
        missing_secrets=missing,
    )
    answer = interrupt(request.model_dump())
    decision = DeployDecision.model_validate(answer)
    return {"approval": decision.model_dump()}


def ask_for_guidance(state: EngineeringState) -> dict[str, Any]:
    """The loop hit its bound: ask a person how to proceed; their answer goes to the Developer."""
    request = GuidanceRequest(
        question=(
            f"{state['project_name']}: tests still fail after {state.get('iteration', 0)} rounds. "
            "What should the Developer do?"
        ),
        project=state["project_name"],
        iterations=state.get("rounds", 0),
        last_failure=(state.get("tests") or {}).get("output_tail", "")[-1500:],
    )
    answer = GuidanceAnswer.model_validate(interrupt(request.model_dump()))
    return {"guidance": answer.answer, "iteration": 0, "engineering_status": "working"}


def wait_for_resources(state: OrchestratorState) -> dict[str, Any]:
    """Park the thread until a server can take the project; the resume sends the work back to Zavhoz."""
    request = ResourcesRequest(
        question=f"{state['project_name']} waits for a ready server with a free port. Retry now?",
        project=state["project_name"] or "",
        project_id=state["project_id"] or 0,
        need="a ready server with a free port",
    )
    answer = ResourcesAnswer.model_validate(interrupt(request.model_dump()))
    return {"zavhoz_status": "working", "messages": [AIMessage(content=f"Retrying resources: {answer.reason}.")]}


__all__ = ["ask_for_guidance", "request_deploy_approval", "wait_for_resources"]
