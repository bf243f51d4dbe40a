"""Engineering subgraph: Architect -> Developer -> Tester, looping until the tests pass; bounded, then a person."""

from __future__ import annotations

from typing import Literal

from langgraph.graph import START, StateGraph
from langgraph.runtime import Runtime

from graphs.context import Context
from graphs.state import EngineeringInput, EngineeringOutput, EngineeringState
from nodes.approval import ask_for_guidance
from nodes.architect import write_design
from nodes.developer import write_code
from nodes.tester import run_tests


def route_tests(
    state: EngineeringState, runtime: Runtime[Context]
) -> Literal["write_code", "ask_for_guidance", "__end__"]:
    """Passed -> done; failed below the bound -> Developer again; at the bound -> ask a person."""
    if (state.get("tests") or {}).get("passed"):
        return "__end__"
    if state.get("iteration", 0) >= runtime.context.settings.engineering_max_iterations:
        return "ask_for_guidance"
    return "write_code"


def build_engineering() -> StateGraph[EngineeringState, Context, EngineeringInput, EngineeringOutput]:
    """The Engineering builder."""
    builder = StateGraph(
        EngineeringState, context_schema=Context, input_schema=EngineeringInput, output_schema=EngineeringOutput
    )
    builder.add_node(write_design)
    builder.add_node(write_code)
    builder.add_node(run_tests)
    builder.add_node(ask_for_guidance)
    builder.add_edge(START, "write_design")
    builder.add_edge("write_design", "write_code")
    builder.add_edge("write_code", "run_tests")
    builder.add_conditional_edges("run_tests", route_tests)
    builder.add_edge("ask_for_guidance", "write_code")
    return builder


graph = build_engineering().compile(name="engineering")
