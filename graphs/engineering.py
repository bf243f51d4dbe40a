"""Engineering subgraph: the contract's phases (PLAN -> TDD -> IMPL -> REVIEW -> COMPLETE) in one loop.

``run_phase`` works whatever phase the state names and names the next one; this graph only routes: to a person when a
phase reached its round limit (guidance) or the budget ran out (extend or stop), to the end when COMPLETE signed.
"""

from __future__ import annotations

from typing import Literal

from langgraph.graph import START, StateGraph
from langgraph.runtime import Runtime

from core.contract import load_for
from graphs.context import Context
from graphs.state import EngineeringInput, EngineeringOutput, EngineeringState
from nodes.approval import ask_for_budget, ask_for_guidance
from nodes.engineering import run_phase


def route_phase(
    state: EngineeringState, runtime: Runtime[Context]
) -> Literal["run_phase", "ask_for_guidance", "ask_for_budget", "__end__"]:
    """Budget spent -> ask; complete or stopped -> end; the next phase at its round limit -> ask; else work it."""
    if state.get("budget_exhausted"):
        return "ask_for_budget"
    if state.get("engineering_status") in ("verified", "stopped") and state.get("phase") is None:
        return "__end__"
    contract = load_for(runtime.context.settings)
    phase = contract.phase(state.get("phase") or contract.first)
    if (state.get("phase_rounds") or {}).get(phase.name, 0) >= phase.max_rounds:
        return "ask_for_guidance"
    return "run_phase"


def build_engineering() -> StateGraph[EngineeringState, Context, EngineeringInput, EngineeringOutput]:
    """The Engineering builder."""
    builder = StateGraph(
        EngineeringState, context_schema=Context, input_schema=EngineeringInput, output_schema=EngineeringOutput
    )
    builder.add_node(run_phase)
    builder.add_node(ask_for_guidance)
    builder.add_node(ask_for_budget)
    builder.add_edge(START, "run_phase")
    builder.add_conditional_edges("run_phase", route_phase)
    builder.add_conditional_edges("ask_for_guidance", route_phase)
    builder.add_conditional_edges("ask_for_budget", route_phase)
    return builder


graph = build_engineering().compile(name="engineering")
