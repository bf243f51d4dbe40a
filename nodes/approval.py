"""Interrupt nodes: each asks a person one typed question and does nothing else (they re-run on resume)."""

from __future__ import annotations

from typing import Any

from langgraph.types import interrupt

from graphs.state import EngineeringState, OrchestratorState
from models.interrupts import DeployApprovalRequest, DeployDecision, GuidanceAnswer, GuidanceRequest
from nodes.po_tools import project_url


def request_deploy_approval(state: OrchestratorState) -> dict[str, Any]:
    """Ask whether to deploy the verified commit to the leased server:port; returns ``approval``."""
    eng, server = state["engineering"], state["server_info"]
    assert eng is not None and server is not None
    host = "127.0.0.1" if server["connection"] == "local" else server["address"]
    request = DeployApprovalRequest(
        question=f"Deploy {state['project_name']} commit {eng['commit'][:10]} to {server['name']}:{server['port']}?",
        project=state["project_name"] or "",
        commit=eng["commit"],
        server=server["name"],
        port=server["port"],
        url=f"http://{host}:{server['port']}{eng['health_path']}",
        tests=eng["tests"],
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


__all__ = ["ask_for_guidance", "project_url", "request_deploy_approval"]
