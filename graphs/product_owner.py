"""The top graph: the PO converses, creates projects, dispatches Zavhoz || Engineering, asks to deploy, deploys."""

from __future__ import annotations

from typing import Literal

from langgraph.graph import START, StateGraph
from langgraph.types import Send

from graphs.context import Context
from graphs.engineering import build_engineering
from graphs.state import OrchestratorState
from graphs.zavhoz import build_zavhoz
from nodes.approval import request_deploy_approval, wait_for_resources
from nodes.devops import deploy_project
from nodes.product_owner import call_po, estimate_project, provision_repository, run_po_tools, surface_incidents
from nodes.report import report_to_user, settle_project


def route_po(state: OrchestratorState) -> Literal["run_po_tools", "__end__"]:
    """Run tools if the PO asked for any, else the turn is over."""
    last = state["messages"][-1]
    return "run_po_tools" if getattr(last, "tool_calls", None) else "__end__"


def route_tools(
    state: OrchestratorState,
) -> Literal["estimate_project", "request_deploy_approval", "call_po"] | list[Send]:
    """Route the tool step's outcome: a new project, an update, or back to the PO.

    A project created this turn starts the pipeline; an update sends both teams to work on the existing project
    (its repository and port lease are kept); a deploy after all asks the person's approval again for the
    verified build; other tool results go back to the PO.
    """
    if state.get("new_project"):
        return "estimate_project"
    if state.get("deploy_again"):
        return "request_deploy_approval"
    if state.get("change"):
        return dispatch_teams(state)
    return "call_po"


def dispatch_teams(state: OrchestratorState) -> list[Send]:
    """Zavhoz and Engineering in the same superstep; each gets only its own input (never accumulated lists).

    An update passes the person's change to Engineering as its feedback; a new project passes none.
    """
    pid, name = state["project_id"], state["project_name"]
    eng = {"project_id": pid, "project_name": name, "spec": state.get("spec"), "feedback": state.get("change")}
    return [Send("zavhoz", {"project_id": pid, "project_name": name}), Send("engineering", eng)]


def route_join(state: OrchestratorState) -> Literal["request_deploy_approval", "settle_project", "report_to_user"]:
    """Ask to deploy only when the code is verified and a server is leased; stopped work is settled first."""
    eng = state.get("engineering")
    if eng and eng["status"] == "verified" and state.get("server_info"):
        return "request_deploy_approval"
    if eng and eng["status"] == "stopped":
        return "settle_project"
    return "report_to_user"


def route_approval(state: OrchestratorState) -> Literal["deploy_project", "settle_project"] | list[Send]:
    """Approve -> deploy; reject -> tell the person; feedback -> back to Engineering with it.

    A reject goes through ``settle_project``, which settles the project when the reject came from a cancel.
    """
    approval = state.get("approval") or {}
    if approval.get("decision") == "approve":
        return "deploy_project"
    if approval.get("decision") == "feedback":
        payload = {
            "project_id": state["project_id"],
            "project_name": state["project_name"],
            "spec": state.get("spec"),
            "feedback": approval.get("feedback"),
        }
        return [Send("engineering", payload)]
    return "settle_project"


def route_deploy(state: OrchestratorState) -> Literal["request_deploy_approval", "settle_project"]:
    """A deploy refused for missing secrets asks again (the person sets them, then approves); else report.

    The report goes through ``settle_project``, which settles a cancel that kept the deploy from starting.
    """
    return "request_deploy_approval" if (state.get("deployment") or {}).get("missing_secrets") else "settle_project"


def route_report(state: OrchestratorState) -> Literal["wait_for_resources", "__end__"]:
    """A project still waiting for a server parks its thread at an interrupt; anything else ends the run."""
    waiting = state.get("zavhoz_status") == "waiting_for_resources" and state.get("engineering")
    return "wait_for_resources" if waiting else "__end__"


def retry_zavhoz(state: OrchestratorState) -> Literal["settle_project"] | list[Send]:
    """After a resume of the resource wait: ask Zavhoz again (a cancelled project is settled instead)."""
    if state.get("zavhoz_status") == "cancelled":
        return "settle_project"
    return [Send("zavhoz", {"project_id": state["project_id"], "project_name": state["project_name"]})]


def join_teams(state: OrchestratorState) -> dict[str, object]:
    """Fan-in point of the two branches (the router after it decides)."""
    return {}


def build_product_owner() -> StateGraph[OrchestratorState, Context, OrchestratorState, OrchestratorState]:
    """The PO builder, with the two subgraphs compiled in as nodes."""
    builder = StateGraph(OrchestratorState, context_schema=Context)
    builder.add_node(surface_incidents)
    builder.add_node(call_po)
    builder.add_node(run_po_tools)
    builder.add_node(estimate_project)
    builder.add_node(provision_repository)
    builder.add_node("zavhoz", build_zavhoz().compile())
    builder.add_node("engineering", build_engineering().compile())
    builder.add_node(join_teams)
    builder.add_node(request_deploy_approval)
    builder.add_node(deploy_project)
    builder.add_node(settle_project)
    builder.add_node(report_to_user)
    builder.add_node(wait_for_resources)
    builder.add_edge(START, "surface_incidents")
    builder.add_edge("surface_incidents", "call_po")
    builder.add_conditional_edges("call_po", route_po)
    builder.add_conditional_edges(
        "run_po_tools", route_tools, ["estimate_project", "request_deploy_approval", "call_po", "zavhoz", "engineering"]
    )
    builder.add_edge("estimate_project", "provision_repository")
    builder.add_conditional_edges("provision_repository", dispatch_teams, ["zavhoz", "engineering"])
    builder.add_edge("zavhoz", "join_teams")
    builder.add_edge("engineering", "join_teams")
    builder.add_conditional_edges("join_teams", route_join)
    builder.add_conditional_edges(
        "request_deploy_approval", route_approval, ["deploy_project", "settle_project", "engineering"]
    )
    builder.add_conditional_edges("deploy_project", route_deploy)
    builder.add_conditional_edges("report_to_user", route_report)
    builder.add_conditional_edges("wait_for_resources", retry_zavhoz, ["zavhoz", "settle_project"])
    return builder


graph = build_product_owner().compile(name="product_owner")
