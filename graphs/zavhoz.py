"""Zavhoz subgraph: check secrets, find a ready server, lease a port -> ``server_info`` (or waiting)."""

from __future__ import annotations

from typing import Literal

from langgraph.graph import END, START, StateGraph

from graphs.context import Context
from graphs.state import ZavhozInput, ZavhozOutput, ZavhozState
from nodes.zavhoz import check_secrets, find_server, lease_port


def route_server(state: ZavhozState) -> Literal["lease_port", "__end__"]:
    """Lease a port when a server was found, else stop (the PO reports waiting_for_resources)."""
    return "lease_port" if state.get("server_id") is not None else "__end__"


def build_zavhoz() -> StateGraph[ZavhozState, Context, ZavhozInput, ZavhozOutput]:
    """The Zavhoz builder (compile it with or without a checkpointer)."""
    builder = StateGraph(ZavhozState, context_schema=Context, input_schema=ZavhozInput, output_schema=ZavhozOutput)
    builder.add_node(check_secrets)
    builder.add_node(find_server)
    builder.add_node(lease_port)
    builder.add_edge(START, "check_secrets")
    builder.add_edge("check_secrets", "find_server")
    builder.add_conditional_edges("find_server", route_server)
    builder.add_edge("lease_port", END)
    return builder


graph = build_zavhoz().compile(name="zavhoz")
